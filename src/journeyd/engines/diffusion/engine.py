"""The diffusers engine: Midjourney's actions on open models (Stable Diffusion 1.5, SDXL, FLUX.1).

Single-file style, top to bottom: choosing the model for a prompt, turning the prompt into
conditioning, then one method per action. Every call is batched (4 candidates, one generator per
seed, so a tile can be reproduced alone), reports progress from the step callback, and stops at the
next step when the task is cancelled (the callback raises). Compositing back onto the parent is
not done here: `render` does it once, so pixels beyond the feather never pass through the VAE.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import cv2
import numpy as np
import torch

from journeyd.domain.prompt import PromptSpec, WeightedPart
from journeyd.engines.base import EngineOutOfMemory, Image, InpaintKind, Mask, Progress, UpscaleMode
from journeyd.engines.diffusion import previews
from journeyd.engines.diffusion.adapters import BLEND_SCALE, reference_scale
from journeyd.engines.diffusion.describing import Captioner, described_prompts
from journeyd.engines.diffusion.loading import LoadedModel, ModelLoadError, load_model, offline, pick_device, reason_of
from journeyd.engines.diffusion.looks import looks_of
from journeyd.engines.diffusion.profiles import REFERENCE_FLAGS, Profile, VersionRules, Versions
from journeyd.engines.diffusion.shortening import Shortened, shorten
from journeyd.engines.diffusion.speedups import COMPILING, denoiser, eager, parse_speedups
from journeyd.engines.diffusion.step_cache import caching
from journeyd.imaging.crop import context_box
from journeyd.imaging.fill import blur_fill

# Fooocus' SDXL resolutions (its flags.sdxl_aspect_ratios), scaled to each model's native area.
BUCKETS_1024 = (
    (704, 1408),
    (704, 1344),
    (768, 1344),
    (768, 1280),
    (832, 1216),
    (832, 1152),
    (896, 1152),
    (896, 1088),
    (960, 1088),
    (960, 1024),
    (1024, 1024),
    (1024, 960),
    (1088, 960),
    (1088, 896),
    (1152, 896),
    (1152, 832),
    (1216, 832),
    (1280, 768),
    (1344, 768),
    (1344, 704),
    (1408, 704),
    (1472, 704),
    (1536, 640),
    (1600, 640),
    (1664, 576),
    (1728, 576),
)
UPSCALE_STRENGTH = {"subtle": 0.25, "creative": 0.45}
UPSCALE_TILES_PER_CALL = 4  # Upscale tiles drawn in one call: as many images as a grid, so its memory
QUALITY_STEPS = {0.25: 0.5, 0.5: 0.75, 1.0: 1.0, 2.0: 1.5, 4.0: 2.0}
CHAOS_SPREAD = 0.35  # at --chaos 100, each candidate's conditioning moves this many standard deviations
REGION_FIELD = 0.618  # how much of the picture a region crop shows around the mask, at least (Fooocus)
PREVIEW_EVERY = 3  # steps between previews
P, R = ParamSpec("P"), TypeVar("R")
# A reference kind's images and the adapter scale they steer with, for one call
References = Mapping[str, tuple[Sequence[Image], float]]


def _memory_errors(action: Callable[P, R]) -> Callable[P, R]:
    """An engine action whose device runs out of memory raises EngineOutOfMemory, after giving the
    cached blocks back, so the worker can retry a batch one task at a time and the next call starts
    from a clean allocator."""

    @functools.wraps(action)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return action(*args, **kwargs)
        except torch.OutOfMemoryError as error:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise EngineOutOfMemory(f"the GPU ran out of memory ({reason_of(error)})") from error

    return guarded


class DiffusionEngine(VersionRules):
    """Its prompt rules (`check`, `check_blend`, ...) are its profiles' `versions` table's."""

    name = "diffusers"

    def __init__(self, models: Sequence[LoadedModel]) -> None:
        """An engine over models already loaded (see `load`); the first serves prompts without --v."""
        if not models:
            raise ValueError("the diffusers engine needs at least one model profile")
        self.models = list(models)
        self.versions = Versions.of(model.profile for model in models)
        self._captioner: Captioner | None = None  # loaded on the first describe
        self._captioner_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        profiles: Sequence[Profile],
        *,
        device: str | None = None,
        speedups: str | None = None,
        dtype: str | None = None,
    ) -> DiffusionEngine:
        """Load every profile's model now, on the best device there is (in `dtype`, by default the
        device's fastest: see `pick_device`), with the speed-ups asked for (a profile's own `speedups`,
        else `JOURNEYD_SPEEDUPS`; see speedups.py), every setting checked before any model loads.
        ModelLoadError if one fails."""
        where, precision = pick_device(device, dtype)
        default = parse_speedups(speedups, where)
        levers = [
            default if p.speedups is None else parse_speedups(p.speedups, where, f"profile {p.name!r}: speedups")
            for p in profiles
        ]
        models = [
            load_model(profile, where, precision, chosen) for profile, chosen in zip(profiles, levers, strict=True)
        ]
        engine = cls(models)
        engine.warm_up([model for model, chosen in zip(models, levers, strict=True) if chosen & COMPILING])
        return engine

    def warm_up(self, models: Sequence[LoadedModel]) -> None:
        """Draw one throwaway grid per model at its default size (and an outpaint, where a dedicated
        inpainting model has its own denoiser), so that compiling and CUDA graph capture happen at
        start-up instead of in the first task. Other sizes compile on first use."""
        prompt, seeds = PromptSpec(text="warm-up"), range(4)
        for model in models:
            size = self._bucket(model, 1.0)
            grid = self._draw(model, [(prompt, seeds)], size, [_ignore])[0]
            if denoiser(model.inpaint) is not denoiser(model.txt2img):
                hole = np.zeros(grid[0].shape[:2], bool)
                hole[: hole.shape[0] // 2] = True
                self._inpaint(model, grid[0], hole, prompt, seeds, "outpaint", _ignore)

    # --- which model ------------------------------------------------------------------------------
    def _model(self, prompt: PromptSpec) -> LoadedModel:
        return self.models[self.versions.index_of(prompt)]

    # --- sizes ------------------------------------------------------------------------------------
    def canvas_size(self, prompt: PromptSpec) -> tuple[int, int]:
        return self._bucket(self._model(prompt), prompt.aspect_ratio[0] / prompt.aspect_ratio[1])

    def _bucket(self, model: LoadedModel, ratio: float) -> tuple[int, int]:
        """The trained resolution nearest in shape to `ratio`, at the model's native area."""
        scale, step = model.profile.native / 1024, _multiple(model)
        width, height = min(BUCKETS_1024, key=lambda wh: abs(math.log(wh[0] / wh[1] / ratio)))
        return max(step, round(width * scale / step) * step), max(step, round(height * scale / step) * step)

    # --- actions ----------------------------------------------------------------------------------
    @_memory_errors
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
        """Imagine. Image prompts steer through the model's IP-Adapter at --iw's scale (without one,
        the picture starts from the first image, as strongly as --iw says); --sref and --cref images
        through its style and face adapters, at --sw's and --cw's."""
        self.versions.check_references(
            prompt, [kind for kind, refs in (("style", style_refs), ("face", character_refs)) if refs]
        )
        model = self._model(prompt)
        adapters = model.adapters.kinds if model.adapters else ()
        weights = _reference_weights(prompt)
        given = {"image": init_images if "image" in adapters else (), "style": style_refs, "face": character_refs}
        references = {kind: (images, reference_scale(kind, weights[kind])) for kind, images in given.items() if images}
        if init_images and "image" not in adapters:
            return self._start_from(model, prompt, init_images[0], size, seeds, progress, references)
        if not references:
            return self.generate_batch([(prompt, seeds)], size, [progress])[0]
        return self._draw(model, [(prompt, seeds)], size, [progress], references)[0]

    def _start_from(
        self,
        model: LoadedModel,
        prompt: PromptSpec,
        image: Image,
        size: tuple[int, int],
        seeds: Sequence[int],
        progress: Progress,
        references: References,
    ) -> list[Image]:
        """An image prompt on a model without an IP-Adapter: img2img from it, as strongly as --iw says."""
        width, height = size
        with model.lock, _circular(model, prompt.tile):
            weight = prompt.image_weight if prompt.image_weight is not None else 1.0
            strength = min(0.95, max(0.4, 1.0 - 0.25 * weight))
            start = _cover(image, width, height)
            return self._img2img(model, prompt, [start] * len(seeds), strength, seeds, progress, references)

    @_memory_errors
    def blend(
        self,
        images: Sequence[Image],
        prompt: PromptSpec,
        size: tuple[int, int],
        seeds: Sequence[int],
        progress: Progress,
    ) -> list[Image]:
        """Blend: the images' IP-Adapter embeddings averaged into one, which steers txt2img fully (the
        prompt, usually empty, adds what it says)."""
        self.versions.check_blend(prompt)
        return self._draw(self._model(prompt), [(prompt, seeds)], size, [progress], {"image": (images, BLEND_SCALE)})[0]

    @_memory_errors
    def describe(self, image: Image, seed: int, progress: Progress) -> list[str]:
        """Four prompts for `image`: its caption (sampled with `seed`), with its palette, with its light
        and composition, and shortened (describing.py)."""
        self.versions.check_describe()
        progress(0, 2)
        caption = self._captioning().caption(image, seed)
        progress(1, 2)
        prompts = described_prompts(caption, looks_of(image))
        progress(2, 2)
        return prompts

    def shorten(self, prompt: PromptSpec) -> Shortened:
        """The prompt's phrases weighed by its model's own text encoders (shortening.py)."""
        model = self._model(prompt)
        with model.lock:
            return shorten(model.txt2img, prompt)

    def _captioning(self) -> Captioner:
        """The captioner of the first profile that names one, loaded once, on that model's device."""
        with self._captioner_lock:
            if self._captioner is None:
                model = next(model for model in self.models if model.profile.captioner)
                source = str(model.profile.captioner)
                try:
                    self._captioner = Captioner.load(source, model.txt2img.device, model.txt2img.dtype, offline())
                except Exception as error:  # transformers raises many kinds; all mean "not usable"
                    raise ModelLoadError(f"could not load captioner {source!r}: {reason_of(error)}") from error
            return self._captioner

    def batch_key(self, prompt: PromptSpec) -> object | None:
        """Imagine tasks share a call when they use the same model, size, steps and guidance (and,
        on FLUX, whether --no asks for true CFG); --tile changes the model for its call, so not that,
        and neither do references, which switch the IP-Adapters on for theirs."""
        if prompt.tile or any(getattr(prompt, refs, ()) for *_, refs in REFERENCE_FLAGS):
            return None
        model = self._model(prompt)
        steps, guidance = _steps_and_guidance(model.profile, prompt)
        negative = model.profile.family == "flux" and bool(prompt.negative)
        return (self.models.index(model), self.canvas_size(prompt), steps, guidance, negative)

    @_memory_errors
    def generate_batch(
        self, jobs: Sequence[tuple[PromptSpec, Sequence[int]]], size: tuple[int, int], progress: Sequence[Progress]
    ) -> list[list[Image]]:
        """Several Imagine jobs (of one batch key) in one pipeline call: their conditionings and
        generators are stacked, and each job's images are its slice of the output."""
        return self._draw(self._model(jobs[0][0]), jobs, size, progress)

    def _draw(
        self,
        model: LoadedModel,
        jobs: Sequence[tuple[PromptSpec, Sequence[int]]],
        size: tuple[int, int],
        progress: Sequence[Progress],
        references: References | None = None,
    ) -> list[list[Image]]:
        width, height = size
        with model.lock, _circular(model, jobs[0][0].tile):
            pipe = model.pipeline("txt2img")
            common = self._common(model, pipe, jobs, progress, size)
            with _steering(model, pipe, common, references):
                images = _to_uint8(_run(pipe, width=width, height=height, **common))
        return [images[start : start + len(seeds)] for start, (_, seeds) in zip(_starts(jobs), jobs, strict=True)]

    @_memory_errors
    def vary(
        self, image: Image, prompt: PromptSpec, strength: float, seeds: Sequence[int], progress: Progress
    ) -> list[Image]:
        if strength <= 0:
            return [image.copy() for _ in seeds]
        model = self._model(prompt)
        with model.lock:
            return self._img2img(model, prompt, [image] * len(seeds), strength, seeds, progress)

    @_memory_errors
    def upscale(self, image: Image, prompt: PromptSpec, mode: UpscaleMode, seed: int, progress: Progress) -> Image:
        """Twice the size: Lanczos, then img2img over overlapping native-size tiles (a few per call,
        as a batch fills the GPU better than one tile), blended."""
        model = self._model(prompt)
        height, width = image.shape[:2]
        big = cv2.resize(image, (2 * width, 2 * height), interpolation=cv2.INTER_LANCZOS4)
        tile = model.profile.native
        boxes = _tiles(2 * width, 2 * height, tile, tile // 8)
        total = np.zeros(big.shape, np.float32)
        weight = np.zeros(big.shape[:2], np.float32)
        calls = [
            range(i, min(i + UPSCALE_TILES_PER_CALL, len(boxes))) for i in range(0, len(boxes), UPSCALE_TILES_PER_CALL)
        ]
        with model.lock:
            for part, indices in enumerate(calls):  # tile i is drawn with seed + i, alone or not
                crops = [big[y0:y1, x0:x1] for x0, y0, x1, y1 in (boxes[i] for i in indices)]
                seeds = [seed + i for i in indices]
                done = self._img2img(
                    model, prompt, crops, UPSCALE_STRENGTH[mode], seeds, _share(progress, part, len(calls))
                )
                for i, drawn in zip(indices, done, strict=True):
                    x0, y0, x1, y1 = boxes[i]
                    ramp = _ramp(x1 - x0, y1 - y0, tile // 8, (x0 > 0, y0 > 0, x1 < 2 * width, y1 < 2 * height))
                    total[y0:y1, x0:x1] += drawn.astype(np.float32) * ramp[..., None]
                    weight[y0:y1, x0:x1] += ramp
        return np.clip(np.rint(total / np.maximum(weight, 1e-6)[..., None]), 0, 255).astype(np.uint8)

    @_memory_errors
    def inpaint(
        self, image: Image, mask: Mask, prompt: PromptSpec, seeds: Sequence[int], kind: InpaintKind, progress: Progress
    ) -> list[Image]:
        """Region: a crop around the mask with context, at the model's resolution. Outpaint: the
        whole canvas as context. The hole is pre-filled; candidates come back pasted into the image."""
        return self._inpaint(self._model(prompt), image, mask, prompt, seeds, kind, progress)

    def _inpaint(
        self,
        model: LoadedModel,
        image: Image,
        mask: Mask,
        prompt: PromptSpec,
        seeds: Sequence[int],
        kind: InpaintKind,
        progress: Progress,
    ) -> list[Image]:
        height, width = image.shape[:2]
        x0, y0, x1, y1 = context_box(mask, field=REGION_FIELD) if kind == "region" else (0, 0, width, height)
        crop, crop_mask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
        work = self._bucket(model, (x1 - x0) / (y1 - y0))
        crop_w = cv2.resize(crop, work, interpolation=cv2.INTER_AREA)
        mask_w = cv2.resize(crop_mask.astype(np.uint8) * 255, work, interpolation=cv2.INTER_LINEAR) >= 128
        filled = blur_fill(crop_w, mask_w)
        with model.lock:
            pipe = model.pipeline("inpaint")
            common = self._common(model, pipe, [(prompt, seeds)], [progress], work)
            if model.profile.region_guidance is not None:
                common["guidance_scale"] = model.profile.region_guidance
            images = _run(
                pipe,
                image=[_pil(filled)] * len(seeds),
                mask_image=[_pil(mask_w.astype(np.uint8) * 255)] * len(seeds),
                width=work[0],
                height=work[1],
                strength=1.0,
                **common,
            )
        candidates = []
        for generated in _to_uint8(images):
            full = image.copy()
            full[y0:y1, x0:x1] = _resize(generated, (x1 - x0, y1 - y0))
            candidates.append(full)
        return candidates

    # --- shared plumbing --------------------------------------------------------------------------
    def _img2img(
        self,
        model: LoadedModel,
        prompt: PromptSpec,
        images: Sequence[Image],
        strength: float,
        seeds: Sequence[int],
        progress: Progress,
        references: References | None = None,
    ) -> list[Image]:
        """img2img that runs the profile's full step count whatever the strength (as Fooocus does):
        diffusers runs int(steps * strength) of `num_inference_steps`, so ask for steps / strength.
        Images of any size are worked at the nearest size the model takes and resized back."""
        height, width = images[0].shape[:2]
        work = _snap(width, height, _multiple(model))
        pipe = model.pipeline("img2img")
        common = self._common(model, pipe, [(prompt, seeds)], [progress], work)
        common["num_inference_steps"] = math.ceil(common["num_inference_steps"] / strength)
        starts = [_pil(_resize(i, work, cv2.INTER_AREA)) for i in images]
        with _steering(model, pipe, common, references):
            out = _run(pipe, image=starts, strength=strength, width=work[0], height=work[1], **common)
        return [_resize(i, (width, height)) for i in _to_uint8(out)]

    def _common(
        self,
        model: LoadedModel,
        pipe: Any,
        jobs: Sequence[tuple[PromptSpec, Sequence[int]]],
        progress: Sequence[Progress],
        size: tuple[int, int],
    ) -> dict[str, Any]:
        """Conditioning, guidance, steps, generators and the progress callback for one batch: the
        jobs' conditionings stacked in order (steps and guidance are the first job's: a batch shares
        them), one generator per seed, and each job's progress given a preview of its first image."""
        steps, guidance = _steps_and_guidance(model.profile, jobs[0][0])
        seeds = [seed for _, job_seeds in jobs for seed in job_seeds]
        generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]

        pending: list[previews.Pending | None] = [None] * len(jobs)  # each job's preview on its way
        roll = jobs[0][0].tile and model.profile.family == "flux"

        def on_step(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            total = max(getattr(pipeline, "num_timesteps", steps), step + 1)
            show = step + 1 < total and (step % PREVIEW_EVERY == PREVIEW_EVERY - 1) and "latents" in tensors
            for job, (report, first) in enumerate(zip(progress, _starts(jobs), strict=True)):
                waiting = pending[job]
                preview = None
                if waiting is not None and waiting.ready():
                    preview, pending[job] = waiting.image(), None
                if show:
                    pending[job] = previews.start(model, pipeline, tensors["latents"], size, first)
                report(step + 1, total, preview)
            if roll and step + 1 < total:
                tensors["latents"] = _roll_flux(pipeline, tensors["latents"], size, step)
            return tensors

        conditionings = [
            _conditioning(pipe, model.profile, prompt, len(job_seeds), guidance > 1, job_seeds)
            for prompt, job_seeds in jobs
        ]
        return {
            **_stack(conditionings),
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "generator": generators,
            "output_type": "np",
            "callback_on_step_end": on_step,
            "callback_on_step_end_tensor_inputs": ["latents"],
        }


def _reference_weights(prompt: PromptSpec) -> dict[str, float]:
    """Each reference kind's weight relative to its flag's default: --iw (default 1), --sw and --cw
    (default 100)."""
    style, character = prompt.style_weight, prompt.character_weight
    return {
        "image": prompt.image_weight if prompt.image_weight is not None else 1.0,
        "style": style / 100 if style is not None else 1.0,
        "face": character / 100 if character is not None else 1.0,
    }


@contextmanager
def _steering(model: LoadedModel, pipe: Any, common: dict[str, Any], references: References | None) -> Iterator[None]:
    """The model's IP-Adapters on for one pipeline call, with the references' embeddings added to its
    arguments; nothing, without references."""
    if not references:
        yield
        return
    if model.adapters is None:  # unreachable past the rules (Versions.check, check_blend), which refuse it
        raise RuntimeError(f"model {model.profile.model!r} has no IP-Adapter")
    images = {kind: images for kind, (images, _) in references.items()}
    guided = common["guidance_scale"] > 1
    device = pipe._execution_device
    common["ip_adapter_image_embeds"] = model.adapters.embeddings(images, len(common["generator"]), guided, device)
    with model.adapters.steering(denoiser(pipe), {kind: scale for kind, (_, scale) in references.items()}):
        yield


def _run(pipe: Any, **arguments: Any) -> np.ndarray:
    """One pipeline call, its images as floats, with the denoiser's step cache (if it has one) on
    for the steps it runs: diffusers runs int(num_inference_steps * strength) of them."""
    steps = int(arguments["num_inference_steps"] * arguments.get("strength", 1.0))
    with caching(denoiser(pipe), steps):
        return pipe(**arguments).images


def _starts(jobs: Sequence[tuple[PromptSpec, Sequence[int]]]) -> list[int]:
    """Where each job's images begin in a batch."""
    return list(itertools.accumulate((len(seeds) for _, seeds in jobs[:-1]), initial=0))


def _steps_and_guidance(profile: Profile, prompt: PromptSpec) -> tuple[int, float]:
    """--q scales the profile's steps; --stylize lowers guidance as it rises (guidance-free
    profiles, such as few-step models at guidance 0 or 1, stay as they are). --steps and --cfg,
    when given, are taken as they are."""
    steps = prompt.steps or max(1, round(profile.steps * QUALITY_STEPS.get(prompt.quality or 1.0, 1.0)))
    if prompt.guidance is not None:
        return steps, prompt.guidance
    stylize = prompt.stylize if prompt.stylize is not None else 100
    guidance = profile.guidance * (100 / max(stylize, 10)) ** 0.15 if profile.guidance > 1 else profile.guidance
    return steps, guidance


def _stack(conditionings: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several jobs' pipeline arguments as one batch: tensors concatenated in job order, settings
    (FLUX's token count and true-CFG scale) taken from the first."""
    if len(conditionings) == 1:
        return dict(conditionings[0])
    out: dict[str, Any] = {}
    for key, value in conditionings[0].items():
        values = [c[key] for c in conditionings]
        out[key] = torch.cat(values) if isinstance(value, torch.Tensor) else value
    return out


@torch.no_grad()
def _conditioning(
    pipe: Any, profile: Profile, prompt: PromptSpec, count: int, guided: bool, seeds: Sequence[int]
) -> dict[str, Any]:
    """Prompt embeddings for `count` candidates. A multi-prompt (`hot:: dog::2`) is encoded part by
    part and the parts' conditionings are averaged by weight, as Midjourney blends separate concepts;
    --no and negative-weight parts are the negative prompt. --chaos then moves each candidate's
    conditioning a seeded random step apart, so the grid spreads out."""
    parts = [part for part in prompt.parts if part.weight > 0] or [WeightedPart(prompt.text, 1.0)]
    out = _encode(pipe, profile, parts[0].text, prompt.negative or None, count, guided)
    if len(parts) > 1:
        others = [_encode(pipe, profile, part.text, None, count, False) for part in parts[1:]]
        total = sum(part.weight for part in parts)
        for key in ("prompt_embeds", "pooled_prompt_embeds"):
            if key in out:
                tensors = [out[key], *(other[key] for other in others)]
                out[key] = sum(t * (part.weight / total) for t, part in zip(tensors, parts, strict=True))
    out["prompt_embeds"] = _spread(out["prompt_embeds"], prompt.chaos, seeds)
    if profile.family == "sdxl":
        out["pooled_prompt_embeds"] = _spread(out["pooled_prompt_embeds"], prompt.chaos, seeds)
    return out


def _encode(pipe: Any, profile: Profile, text: str, negative: str | None, count: int, guided: bool) -> dict[str, Any]:
    """One text's conditioning (and the negative's, if guided) as the pipeline's keyword arguments."""
    device = pipe._execution_device
    if profile.family == "flux":
        return _flux_encode(pipe, profile, text, negative, count)
    if profile.family == "sdxl":
        embeds, negative_embeds, pooled, negative_pooled = pipe.encode_prompt(
            text,
            device=device,
            num_images_per_prompt=count,
            do_classifier_free_guidance=guided,
            negative_prompt=negative,
        )
        out = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
        if guided:
            out |= {"negative_prompt_embeds": negative_embeds, "negative_pooled_prompt_embeds": negative_pooled}
        return out
    embeds, negative_embeds = pipe.encode_prompt(text, device, count, guided, negative)
    return {"prompt_embeds": embeds, **({"negative_prompt_embeds": negative_embeds} if guided else {})}


def _flux_encode(pipe: Any, profile: Profile, text: str, negative: str | None, count: int) -> dict[str, Any]:
    """FLUX is guidance-distilled: no negative prompt, except by "true CFG" (a second pass), which
    only the base pipelines have (FLUX.1-Fill has none); --no pays for it only when given."""
    tokens = {"max_sequence_length": profile.text_tokens} if profile.text_tokens else {}
    device = pipe._execution_device
    embeds, pooled, _ = pipe.encode_prompt(
        prompt=text, prompt_2=None, device=device, num_images_per_prompt=count, **tokens
    )
    out = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled, **tokens}
    if negative and "negative_prompt_embeds" in inspect.signature(pipe.__call__).parameters:
        negative_embeds, negative_pooled, _ = pipe.encode_prompt(
            prompt=negative, prompt_2=None, device=device, num_images_per_prompt=count, **tokens
        )
        out |= {
            "negative_prompt_embeds": negative_embeds,
            "negative_pooled_prompt_embeds": negative_pooled,
            "true_cfg_scale": profile.negative_guidance,
        }
    return out


def _spread(embeds: torch.Tensor, chaos: int | None, seeds: Sequence[int]) -> torch.Tensor:
    if not chaos:
        return embeds
    scale = CHAOS_SPREAD * chaos / 100 * float(embeds.float().std())
    noise = torch.stack(
        [
            torch.randn(embeds.shape[1:], generator=torch.Generator("cpu").manual_seed(int(seed) ^ 0xC4A05))
            for seed in seeds
        ]
    )
    return embeds + (scale * noise).to(embeds.device, embeds.dtype)


@contextmanager
def _circular(model: LoadedModel, tile: bool) -> Iterator[None]:
    """--tile: seamless textures by padding every convolution circularly for this call (eagerly: a
    compiled graph would not see the change). FLUX's transformer has none: see `_roll_flux`."""
    if not tile:
        yield
        return
    modules = [denoiser(model.txt2img), model.txt2img.vae]
    convs = [m for module in modules for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    saved = [conv.padding_mode for conv in convs]
    for conv in convs:
        conv.padding_mode = "circular"
    try:
        with eager():
            yield
    finally:
        for conv, mode in zip(convs, saved, strict=True):
            conv.padding_mode = mode


def _roll_flux(pipe: Any, latents: torch.Tensor, size: tuple[int, int], step: int) -> torch.Tensor:
    """--tile on FLUX: its transformer has no convolutions to pad circularly (only the VAE's are), so
    after every step the latents are rolled around by a new offset, and the picture's edges are
    denoised in the middle of the frame, where the model sees them meet. Offsets follow the golden
    ratio, so they cover the frame evenly; they are even, to keep FLUX's 2x2 latent patches whole.
    A roll of a seamless texture is still one: the last offset is not undone."""
    width, height = size
    grid = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
    batch, channels, rows, cols = grid.shape
    phase = ((step + 1) * 0.6180339887) % 1.0
    shift = (2 * round(rows * phase / 2), 2 * round(cols * (1.0 - phase) / 2))
    return pipe._pack_latents(torch.roll(grid, shift, dims=(2, 3)), batch, channels, rows, cols)


def _multiple(model: LoadedModel) -> int:
    """Pixel sizes must divide into the latent grid and the UNet's down-samplings (FLUX packs
    latents 2x2)."""
    pipe = model.txt2img
    if model.profile.family == "flux":
        return max(16, int(pipe.vae_scale_factor * 2))
    return max(8, int(pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)))


def _snap(width: int, height: int, step: int) -> tuple[int, int]:
    return max(step, round(width / step) * step), max(step, round(height / step) * step)


def _ignore(done: int, total: int, preview: Image | None = None) -> None:
    """Progress for a call no task waits on."""


def _share(progress: Progress, index: int, count: int) -> Progress:
    """Progress of one part of `count` parts, reported as progress of the whole."""

    def report(done: int, total: int, preview: Image | None = None) -> None:
        progress(index * total + done, count * total)  # a tile's preview is not the picture

    return report


def _tiles(width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    def starts(length: int) -> list[int]:
        if length <= tile:
            return [0]
        count = math.ceil((length - overlap) / (tile - overlap))
        return [round(i * (length - tile) / (count - 1)) for i in range(count)]

    size_w, size_h = min(tile, width), min(tile, height)
    return [(x, y, min(x + size_w, width), min(y + size_h, height)) for y in starts(height) for x in starts(width)]


def _ramp(width: int, height: int, overlap: int, inner: tuple[bool, bool, bool, bool]) -> np.ndarray:
    """Blend weights for a tile: 1 in the middle, rising over `overlap` on sides that meet a neighbour."""
    left, top, right, bottom = inner
    xs = np.ones(width, np.float32)
    ys = np.ones(height, np.float32)
    ramp = (np.arange(overlap, dtype=np.float32) + 1) / (overlap + 1)
    if overlap and left:
        xs[:overlap] = np.minimum(xs[:overlap], ramp)
    if overlap and right:
        xs[-overlap:] = np.minimum(xs[-overlap:], ramp[::-1])
    if overlap and top:
        ys[:overlap] = np.minimum(ys[:overlap], ramp)
    if overlap and bottom:
        ys[-overlap:] = np.minimum(ys[-overlap:], ramp[::-1])
    return ys[:, None] * xs[None, :]


def _cover(image: Image, width: int, height: int) -> Image:
    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    resized = cv2.resize(
        image, (max(width, round(w * scale)), max(height, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    y, x = (resized.shape[0] - height) // 2, (resized.shape[1] - width) // 2
    return resized[y : y + height, x : x + width]


def _resize(image: Image, size: tuple[int, int], interpolation: int = cv2.INTER_LANCZOS4) -> Image:
    if (image.shape[1], image.shape[0]) == size:
        return image
    return cv2.resize(image, size, interpolation=interpolation)


def _pil(image: np.ndarray) -> Any:
    from PIL import Image as PILImage

    return PILImage.fromarray(image)


def _to_uint8(images: np.ndarray) -> list[Image]:
    return [np.clip(np.rint(image * 255), 0, 255).astype(np.uint8) for image in images]
