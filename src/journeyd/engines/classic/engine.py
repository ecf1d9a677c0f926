"""`ClassicEngine`: the Engine seam for the procedural pictures, with progress counting.

Each action reads the prompt into a recipe, renders fresh pictures where it needs them and
blends them with the pictures it was given (warped for Vary, a smooth prior for outpainting);
Vary (Region) heals the region and paints what the prompt names into it (`region`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from journeyd.domain.errors import InvalidRequest
from journeyd.domain.prompt import PromptSpec
from journeyd.engines.base import Image, InpaintKind, Mask, Progress, Shortened, UpscaleMode
from journeyd.engines.classic.blend import blend_images
from journeyd.engines.classic.describe import describe_image
from journeyd.engines.classic.fields import blur, border_mode, lerp, luma, noise, seeded_rng, smoothstep
from journeyd.engines.classic.recipe import read_prompt, read_region_prompt
from journeyd.engines.classic.region import paint_region
from journeyd.engines.classic.render import STAGES, render
from journeyd.engines.classic.shorten import shorten_prompt
from journeyd.imaging.fill import blur_fill

_INPAINT_RENDER_SIDE = 512  # prompt content for outpainting is drawn at most this big, then resized


class ClassicEngine:
    """Procedural, weight-free engine: deterministic pictures from prompt words and seeds."""

    name = "classic"

    def __init__(self, base_size: int = 512, *, step_delay_s: float = 0.0) -> None:
        if base_size < 64:
            raise ValueError(f"base_size must be at least 64, got {base_size}")
        self.base_size = base_size
        self.step_delay_s = step_delay_s  # each step also waits this long: a GPU's pace, for fleet tests and benches

    def check(self, prompt: PromptSpec) -> None:
        """Every version and flag can be drawn, there is no model to map them to; but style and character
        references need an image encoder and an IP-Adapter, which it does not have."""
        for refs, flag in ((prompt.style_refs, "--sref"), (prompt.character_refs, "--cref")):
            if refs:
                raise InvalidRequest(
                    f"the classic engine has no IP-Adapter; {flag} needs the diffusers engine with an "
                    "ip_adapter configured"
                )

    def check_blend(self, prompt: PromptSpec) -> None:
        self.check(prompt)

    def check_describe(self) -> None:
        pass  # it describes from its own measurements of the image: nothing to configure

    def check_shorten(self, prompt: PromptSpec) -> None:
        shorten_prompt(prompt)  # cheap (the lexicon only); refuses a prompt with too few words it draws

    def canvas_size(self, prompt: PromptSpec) -> tuple[int, int]:
        return self.size_for(prompt.aspect_ratio)

    def size_for(self, aspect: tuple[int, int]) -> tuple[int, int]:
        ratio_w, ratio_h = aspect
        if ratio_w <= 0 or ratio_h <= 0:
            raise ValueError(f"aspect sides must be positive, got {aspect}")
        ratio = ratio_w / ratio_h
        area = float(self.base_size) ** 2
        ideal_h = math.sqrt(area / ratio)
        low = max(64, int(ideal_h // 8) * 8 - 24)
        best: tuple[float, int, int] | None = None
        for height in range(low, max(low, int(ideal_h // 8) * 8 + 32) + 1, 8):
            width = max(64, round(height * ratio / 8) * 8)
            # Ratio first, area second: a 4:1 canvas should look 4:1 even if its area drifts a bit.
            error = abs(math.log(width / height / ratio)) + 0.25 * abs(math.log(width * height / area))
            if best is None or error < best[0]:
                best = (error, width, height)
        assert best is not None
        return best[1], best[2]

    def generate(
        self,
        prompt: PromptSpec,
        size: tuple[int, int],
        seeds: Sequence[int],
        progress: Progress,
        init_images: Sequence[Image] = (),
        *,
        style_refs: Sequence[Image] = (),
        character_refs: Sequence[Image] = (),
    ) -> list[Image]:
        if len(style_refs) or len(character_refs):  # refused by `check` at submit
            raise InvalidRequest("the classic engine has no IP-Adapter for --sref or --cref")
        width, height = _check_size(size)
        recipe = read_prompt(prompt)
        tick = _Counter(progress, len(seeds) * STAGES, self.step_delay_s)
        init = _to_float(_cover(init_images[0], width, height)) if len(init_images) else None
        # --iw 1 -> the image prompt is half the picture; --iw 3 -> three quarters.
        iw = 1.0 if prompt.image_weight is None else prompt.image_weight
        weight = min(0.85, iw / (1.0 + iw))
        images = []
        for seed in seeds:
            picture = render(recipe, prompt, width, height, seed, tick)
            if init is not None and weight > 0:
                picture = lerp(picture, init, weight)
            images.append(_to_uint8(picture))
            tick.show(images[0])
        return images

    def vary(
        self, image: Image, prompt: PromptSpec, strength: float, seeds: Sequence[int], progress: Progress
    ) -> list[Image]:
        strength = float(np.clip(strength, 0.0, 1.0))
        h, w = image.shape[:2]
        total = len(seeds) * (STAGES + 1)
        tick = _Counter(progress, total, self.step_delay_s)
        if strength == 0.0:
            return _unchanged(image, seeds, tick, total)
        recipe = read_prompt(prompt)
        source = _to_float(image[..., :3])
        grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        out = []
        for seed in seeds:
            rng = seeded_rng(seed, recipe.key, b"vary")
            # A smooth displacement field moves things around by up to a few percent of the frame.
            amplitude = strength**1.5 * 0.035 * min(h, w)
            dx = noise(rng, h, w, 3.5, prompt.tile) * amplitude
            dy = noise(rng, h, w, 3.5, prompt.tile) * amplitude
            warped = cv2.remap(source, grid_x + dx, grid_y + dy, cv2.INTER_LINEAR, borderMode=border_mode(prompt.tile))
            # Colour jitter: per-channel gain and a shared brightness shift.
            gain = 1.0 + rng.normal(0.0, 0.07 * strength, 3).astype(np.float32)
            warped = warped * gain + np.float32(rng.normal(0.0, 0.03 * strength))
            tick()
            fresh = render(recipe, prompt, w, h, seed, tick)
            # How much of a fresh picture comes in: strength**3 on average (all of it at strength 1,
            # an eighth for Vary (Subtle)), more in some places than others (alpha = b ** e^(-k n)),
            # so parts of the picture change instead of all of it turning into a double exposure.
            patches = noise(rng, h, w, 3.0, prompt.tile)
            alpha = np.float32(strength**3) ** np.exp(-1.5 * strength * patches)
            out.append(_to_uint8(lerp(warped, fresh, alpha)))
            tick.show(out[0])
        return out

    def upscale(self, image: Image, prompt: PromptSpec, mode: UpscaleMode, seed: int, progress: Progress) -> Image:
        if mode not in ("subtle", "creative"):
            raise ValueError(f"unknown upscale mode {mode!r}")
        tick = _Counter(progress, 3, self.step_delay_s)
        h, w = image.shape[:2]
        source = np.ascontiguousarray(image[..., :3]).astype(np.float32)
        if prompt.tile:
            # Resample a wrapped copy so the seam of a tile stays seamless at twice the size.
            pad = 4
            padded = np.pad(source, ((pad, pad), (pad, pad), (0, 0)), mode="wrap")
            up = cv2.resize(padded, ((w + 2 * pad) * 2, (h + 2 * pad) * 2), interpolation=cv2.INTER_LANCZOS4)
            up = up[2 * pad : -2 * pad, 2 * pad : -2 * pad]
        else:
            up = cv2.resize(source, (w * 2, h * 2), interpolation=cv2.INTER_LANCZOS4)
        tick()
        if mode == "creative":
            rng = seeded_rng(seed, read_prompt(prompt).key, b"upscale")
            soft = blur(up, 1.4, prompt.tile)
            up = up + 0.7 * (up - soft)  # unsharp mask
            # Fine grain where there are edges already, so flat areas stay clean.
            gray = luma(soft)
            edges = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
            scale = float(np.percentile(edges[::4, ::4], 95)) + 1e-3
            edges = blur(np.clip(edges / scale, 0.0, 1.0), 2.0, prompt.tile)
            tick()
            grain = blur(rng.standard_normal((2 * h, 2 * w), dtype=np.float32), 0.55, prompt.tile)
            grain /= grain.std() + 1e-6
            up = up + (grain * (3.0 + 9.0 * edges))[..., None]
        else:
            tick()
        tick()
        return np.clip(up + 0.5, 0, 255).astype(np.uint8)

    def inpaint(
        self,
        image: Image,
        mask: Mask,
        prompt: PromptSpec,
        seeds: Sequence[int],
        kind: InpaintKind,
        progress: Progress,
    ) -> list[Image]:
        if kind not in ("region", "outpaint"):
            raise ValueError(f"unknown inpaint kind {kind!r}")
        image = np.ascontiguousarray(image[..., :3])
        h, w = image.shape[:2]
        hole = np.asarray(mask, dtype=bool)
        if hole.shape != (h, w):
            raise ValueError(f"mask shape {hole.shape} does not match image shape {(h, w)}")
        # Region: the heal, two steps per candidate, and handing them over; outpaint: the prior, then a render each.
        total = 2 + 2 * len(seeds) if kind == "region" else 1 + len(seeds) * (STAGES + 1)
        tick = _Counter(progress, total, self.step_delay_s)
        if not hole.any():
            return _unchanged(image, seeds, tick, total)

        if kind == "region":
            # Heal from the surroundings, then paint what the prompt names that the engine can draw.
            out = paint_region(image, hole, read_region_prompt(prompt), seeds, tick)
            tick.show(out[0])
            tick()
            return out

        # Outpaint: a colour prior that continues the known edge, and the whole frame drawn, so
        # horizons and layout run on across the new canvas.
        base = blur_fill(image, hole)
        ys, xs = np.nonzero(hole)
        crop = (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
        prior = _to_float(base[crop])
        # Prompt content fades in with the distance from the hole's border, so the seam stays continuous.
        dist = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3)
        ramp = smoothstep(0.0, float(np.clip(0.5 * dist.max(), 2.0, 96.0)), dist[crop])
        tick()

        recipe = read_prompt(prompt)
        scale = min(1.0, _INPAINT_RENDER_SIDE / max(w, h))
        rw, rh = max(8, round(w * scale)), max(8, round(h * scale))
        paint_here = hole[crop][..., None]
        out = []
        for seed in seeds:
            fresh = render(recipe, prompt, rw, rh, seed, tick)
            if (rw, rh) != (w, h):
                fresh = cv2.resize(fresh, (w, h), interpolation=cv2.INTER_CUBIC)
            # New canvas: keep the prior's low frequencies, take the prompt's texture and a tint.
            fresh = fresh[crop]
            soft = blur(fresh, 6.0, False)
            painted = prior + ramp[..., None] * (0.35 * (soft - prior) + 0.9 * (fresh - soft))
            candidate = image.copy()
            np.copyto(candidate[crop], _to_uint8(painted), where=paint_here)
            out.append(candidate)
            tick.show(candidate)
            tick()
        return out

    def describe(self, image: Image, seed: int, progress: Progress) -> list[str]:
        """Worded from the image's own measurements (`classic.describe`): what it looks like, not what it shows."""
        return describe_image(image, seed, progress)

    def blend(
        self,
        images: Sequence[Image],
        prompt: PromptSpec,
        size: tuple[int, int],
        seeds: Sequence[int],
        progress: Progress,
    ) -> list[Image]:
        """One image's structure in another's palette (`classic.blend`). The prompt's words are not drawn into a
        blend: mixing the images is the whole picture."""
        return blend_images(images, _check_size(size), seeds, progress)

    def shorten(self, prompt: PromptSpec) -> Shortened:
        return shorten_prompt(prompt)


def _cover(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to fill (width, height), cropping the overflow from the centre (as RGB)."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.shape[2] < 3:
        image = np.repeat(image[..., :1], 3, axis=2)
    ih, iw = image.shape[:2]
    scale = max(width / iw, height / ih)
    rw, rh = max(width, round(iw * scale)), max(height, round(ih * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(np.ascontiguousarray(image[..., :3]), (rw, rh), interpolation=interpolation)
    top, left = (rh - height) // 2, (rw - width) // 2
    return resized[top : top + height, left : left + width]


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {size}")
    return width, height


class _Counter:
    """tick() reports one more finished step (after `delay_s`); cancellation raises out of it. Once a
    picture is finished it rides along as the step preview, as the diffusers engine shows its first."""

    def __init__(self, progress: Progress, total: int, delay_s: float = 0.0) -> None:
        self.progress, self.total, self.delay_s = progress, total, delay_s
        self.done = 0
        self.preview: Image | None = None
        progress(0, total)

    def __call__(self) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.done += 1
        self.progress(min(self.done, self.total), self.total, self.preview)

    def show(self, picture: Image) -> None:
        if self.preview is None:
            self.preview = picture


def _to_float(image: np.ndarray) -> np.ndarray:
    """uint8 0..255 to float32 0..1, the range pictures are painted in."""
    return image.astype(np.float32) / 255.0


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """float 0..1 back to uint8, rounded and clipped."""
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _unchanged(image: Image, seeds: Sequence[int], tick: Callable[[], None], steps: int) -> list[Image]:
    """Nothing to paint: report every step done and give back one copy of `image` per seed."""
    for _ in range(steps):
        tick()
    return [image.copy() for _ in seeds]
