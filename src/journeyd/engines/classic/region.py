"""Vary (Region): heal the region from what surrounds it, then paint the prompt's motif into it.

The region is first filled with the image's own texture (`exemplar_fill`), so an empty prompt, or
one naming nothing drawable, gives back the scene without what was there. A motif the lexicon
knows (`MOTIF_OF`: sun, moon, boat, lighthouse, tree, house, bird) is then drawn to fit the region,
in its own colours or the one the prompt names for it, lit by the light measured around the region.
With no motif a named colour tints the healed region. Whatever is new fades out before the region's
border and carries the scene's grain, so across the border it is the image's texture on both sides.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from journeyd.engines.classic.fields import lerp, luma, noise, seeded_rng, smoothstep
from journeyd.engines.classic.lexicon import RGB
from journeyd.engines.classic.recipe import RegionRecipe
from journeyd.imaging.fill import exemplar_fill

_RING_PX = 12  # the surroundings are measured this far outside the region
_FIT_SIDE = 128  # the motif's place is found on a copy of the region at most this big

# Each motif's box, width / height, and how much of the largest such box in the region it fills.
_ASPECT = {"sun": 1.0, "moon": 1.0, "boat": 1.1, "lighthouse": 0.34, "tree": 0.75, "house": 1.3, "bird": 2.2}
# Where a motif named in an Imagine stands: (top, bottom) rows relative to the horizon (the bird's are
# from the top of the picture) and the width of its place, as fractions of the picture.
_STANDS = {
    "lighthouse": (-0.36, 0.04, 0.16),
    "tree": (-0.28, 0.05, 0.16),
    "house": (-0.16, 0.04, 0.24),
    "boat": (0.02, 0.18, 0.24),
    "bird": (0.08, 0.3, 0.16),
}
STANDING = frozenset(_STANDS)
_FILL = {"sun": 1.0, "moon": 0.8, "boat": 0.95, "lighthouse": 1.0, "tree": 1.0, "house": 0.95, "bird": 0.6}


@dataclass(frozen=True)
class Light:
    """The scene's light around the region: what a painted motif is lit by."""

    mean: np.ndarray  # (3,) mean colour of the ring, 0..1
    level: float  # its brightness, 0..1
    side: float  # -1 (brighter on the left) .. 1 (brighter on the right)

    def lit(self, colour: RGB | np.ndarray) -> np.ndarray:
        """A surface colour as this light shows it: darker in a dark scene, cast towards its colour."""
        c = np.asarray(colour, np.float32)
        return np.clip(lerp(c * (0.45 + 0.7 * self.level), self.mean, 0.2), 0.0, 1.0)


def paint_region(
    image: np.ndarray, hole: np.ndarray, recipe: RegionRecipe, seeds: Sequence[int], tick: Callable[[], None]
) -> list[np.ndarray]:
    """One candidate per seed: `image` (HxWx3 uint8) with `hole` healed and repainted, pixels off it
    untouched. `tick` is called once for the heal, then twice per candidate."""
    rngs = [seeded_rng(seed, recipe.key, b"region") for seed in seeds]
    healed = exemplar_fill(image, hole, rngs)
    tick()
    return [_repaint(image, fill, hole, recipe, rng, tick) for fill, rng in zip(healed, rngs, strict=True)]


def _repaint(
    image: np.ndarray,
    healed: np.ndarray,
    hole: np.ndarray,
    recipe: RegionRecipe,
    rng: np.random.Generator,
    tick: Callable[[], None],
) -> np.ndarray:
    h, w = hole.shape
    ys, xs = np.nonzero(hole)
    pad = _RING_PX + 2
    box = (
        slice(max(0, int(ys.min()) - pad), min(h, int(ys.max()) + 1 + pad)),
        slice(max(0, int(xs.min()) - pad), min(w, int(xs.max()) + 1 + pad)),
    )
    region = hole[box]
    canvas = healed[box].astype(np.float32) / 255.0
    if recipe.motif is not None:
        canvas = _motif_in(canvas, region, recipe, rng)
    elif recipe.tint is not None:
        canvas = _tint(canvas, recipe.tint, 0.95 * _soft(region))
    tick()
    out = image.copy()
    np.copyto(out[box], np.clip(canvas * 255.0 + 0.5, 0, 255).astype(np.uint8), where=region[..., None])
    tick()
    return out


def stand_in_scene(picture: np.ndarray, recipe: RegionRecipe, horizon: float, rng: np.random.Generator) -> np.ndarray:
    """An Imagine's picture (HxWx3 float 0..1) with the motif its prompt names standing where such a thing
    stands: a lighthouse, tree or house on the horizon, a boat on the water below it, a bird in the sky.
    The sky draws its own sun and moon; other pictures are returned as they are."""
    place = _STANDS.get(recipe.motif or "")
    if place is None:
        return picture
    top, bottom, width = place
    h, w = picture.shape[:2]
    if recipe.motif != "bird":
        top, bottom = horizon + top, horizon + bottom
    centre = rng.uniform(0.2, 0.8)
    rows = slice(max(0, round(top * h)), min(h, round(bottom * h)))
    cols = slice(max(0, round((centre - width / 2) * w)), min(w, round((centre + width / 2) * w)))
    region = np.zeros((h, w), bool)
    region[rows, cols] = True
    if not region.any():
        return picture
    painted = _motif_in(picture, region, recipe, rng)
    return np.where(region[..., None], painted, picture)


def _motif_in(canvas: np.ndarray, region: np.ndarray, recipe: RegionRecipe, rng: np.random.Generator) -> np.ndarray:
    """`canvas` with the recipe's motif fitted into `region`, lit by the light measured around it."""
    inside = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3)
    ramp = smoothstep(0.0, float(np.clip(0.3 * inside.max(), 3.0, 48.0)), inside)
    return _paint_motif(canvas, region, ramp, recipe, _light(canvas, region), rng)


def _light(canvas: np.ndarray, region: np.ndarray) -> Light:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * _RING_PX + 1, 2 * _RING_PX + 1))
    ring = (cv2.dilate(region.astype(np.uint8), kernel) > 0) & ~region
    if not ring.any():
        ring = ~region if (~region).any() else region
    mean = canvas[ring].mean(axis=0)
    brightness = luma(canvas)
    cols = np.nonzero(ring)[1]
    middle = (cols.min() + cols.max()) / 2.0
    left, right = (
        ring & (np.arange(ring.shape[1])[None, :] < middle),
        ring & (np.arange(ring.shape[1])[None, :] >= middle),
    )
    side = 0.0
    if left.any() and right.any():
        side = float(np.clip((brightness[right].mean() - brightness[left].mean()) * 8.0, -1.0, 1.0))
    return Light(mean=mean.astype(np.float32), level=float(luma(mean)), side=side)


def _tint(canvas: np.ndarray, colour: RGB, strength: np.ndarray) -> np.ndarray:
    """Shift the region's colour towards `colour` (chroma mostly, some lightness), its texture kept."""
    lab = cv2.cvtColor(np.ascontiguousarray(canvas, np.float32), cv2.COLOR_RGB2Lab)
    target = cv2.cvtColor(np.asarray(colour, np.float32).reshape(1, 1, 3), cv2.COLOR_RGB2Lab)[0, 0]
    lab[..., 0] += (target[0] - lab[..., 0]) * 0.4 * strength
    lab[..., 1:] += (target[1:] - lab[..., 1:]) * strength[..., None]
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), 0.0, 1.0)


def _fit(region: np.ndarray, aspect: float) -> tuple[float, float, float]:
    """(cx, cy, width) of the largest box of `aspect` (w / h) around the region's deepest point for it."""
    rh, rw = region.shape
    s = min(1.0, _FIT_SIDE / max(rh, rw))
    # Squash the region so the box becomes a square; the deepest point then fits the biggest one.
    sw, sh = max(1, round(rw * s)), max(1, round(rh * s * aspect))
    small = cv2.resize(region.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST)
    depth = cv2.distanceTransform(np.pad(small, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    radius = float(depth[y, x])
    return (x + 0.5) / s, (y + 0.5) / (s * aspect), 1.5 * radius / s


class _Box:
    """A motif's box in the canvas: u, v in 0..1 (v down) to pixels, and shapes drawn in it."""

    def __init__(self, shape: tuple[int, int], cx: float, cy: float, width: float, aspect: float) -> None:
        self.shape, self.cx, self.cy, self.bw, self.bh = shape, cx, cy, width, width / aspect
        self.x = np.arange(shape[1], dtype=np.float32)[None, :] + 0.5
        self.y = np.arange(shape[0], dtype=np.float32)[:, None] + 0.5

    def px(self, u: float, v: float) -> tuple[float, float]:
        return self.cx + (u - 0.5) * self.bw, self.cy + (v - 0.5) * self.bh

    def u(self) -> np.ndarray:
        return (self.x - self.cx) / self.bw + 0.5

    def v(self) -> np.ndarray:
        return (self.y - self.cy) / self.bh + 0.5

    def polygon(self, points: list[tuple[float, float]]) -> np.ndarray:
        """Coverage of a polygon (box units), anti-aliased."""
        layer = np.zeros(self.shape, np.uint8)
        pts = np.array([self.px(u, v) for u, v in points], np.float64)
        cv2.fillPoly(layer, [np.round(pts * 8).astype(np.int32)], 255, cv2.LINE_AA, 3)
        return layer.astype(np.float32) / 255.0

    def stroke(self, points: list[tuple[float, float]], thickness: float) -> np.ndarray:
        layer = np.zeros(self.shape, np.uint8)
        pts = np.array([self.px(u, v) for u, v in points], np.float64)
        cv2.polylines(layer, [np.round(pts * 8).astype(np.int32)], False, 255, max(1, round(thickness)), cv2.LINE_AA, 3)
        return layer.astype(np.float32) / 255.0

    def distance(self, u: float, v: float) -> np.ndarray:
        """Pixel distance to the point (u, v)."""
        x, y = self.px(u, v)
        return np.sqrt((self.x - x) ** 2 + (self.y - y) ** 2)

    def disc(self, u: float, v: float, radius: float) -> np.ndarray:
        return smoothstep(radius + 1.0, radius - 1.0, self.distance(u, v))

    def rect(self, u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
        return self.polygon([(u0, v0), (u1, v0), (u1, v1), (u0, v1)])


class _Paint:
    """The canvas a motif is painted on, and how much of it solid paint now covers (for the grain)."""

    def __init__(self, canvas: np.ndarray) -> None:
        self.base = canvas
        self.canvas = canvas.copy()
        self.solid = np.zeros(canvas.shape[:2], np.float32)
        self.light = np.zeros_like(canvas)  # what is added over the scene without covering it: glow, shadow

    def fill(self, colour: np.ndarray, alpha: np.ndarray) -> None:
        self.canvas = lerp(self.canvas, colour, alpha)
        self.solid = np.maximum(self.solid, alpha)

    def glow(self, distance: np.ndarray, reach: float, colour: np.ndarray, amount: float) -> None:
        """An emitter's light over what is behind it: brighter, never a flat disc of colour."""
        halo = np.exp(-((distance / reach) ** 2))[..., None] * amount
        self.light += halo * (colour - self.base * 0.5)

    def shade(self, target: np.ndarray, alpha: np.ndarray) -> None:
        """Move the scene towards `target` where `alpha`, its texture still showing (a shadow)."""
        self.light += (target - self.base) * alpha[..., None]


def _hued(colour: RGB | None, default: RGB, value: float | None = None, sat: float = 1.0) -> np.ndarray:
    """`colour` (or `default`), optionally at brightness `value` and with its saturation scaled."""
    h, s, v = colorsys.rgb_to_hsv(*(colour or default))
    return np.array(colorsys.hsv_to_rgb(h, min(1.0, s * sat), v if value is None else value), np.float32)


def _paint_motif(
    canvas: np.ndarray,
    region: np.ndarray,
    ramp: np.ndarray,
    recipe: RegionRecipe,
    light: Light,
    rng: np.random.Generator,
) -> np.ndarray:
    motif = recipe.motif
    assert motif is not None
    aspect = _ASPECT[motif]
    cx, cy, width = _fit(region, aspect)
    width *= _FILL[motif] * rng.uniform(0.85, 1.0)
    cx += rng.normal(0.0, 0.03) * width
    box = _Box(region.shape, cx, cy, width, aspect)
    paint = _Paint(canvas)
    _MOTIFS[motif](paint, box, recipe.motif_colour, light, rng)
    # Solid paint takes the scene's grain and fades out before the region's border; glow and shadow
    # fade out over the whole depth of the region, so no edge of them is left to see.
    grain = canvas - cv2.GaussianBlur(canvas, (0, 0), 1.2)
    solid = (paint.solid * ramp)[..., None]
    lit = canvas + paint.light * _soft(region)[..., None]
    return np.clip(lit * (1.0 - solid) + (paint.canvas + grain) * solid, 0.0, 1.0)


def _soft(region: np.ndarray) -> np.ndarray:
    """0 on the region's border rising smoothly to 1 near its deepest point."""
    inside = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3)
    return smoothstep(0.0, max(3.0, 0.85 * float(inside.max())), inside)


def _sun(p: _Paint, box: _Box, colour: RGB | None, light: Light, rng: np.random.Generator) -> None:
    radius = 0.2 * box.bw
    d = box.distance(0.5, 0.5)
    glow = lerp(_hued(colour, (1.0, 0.85, 0.45), 1.0, 0.9), light.mean, 0.25)
    p.glow(d, 0.55 * box.bw, glow, 0.75)
    p.glow(d, 0.22 * box.bw, glow, 0.6)
    core = lerp(_hued(colour, (1.0, 0.9, 0.6), 1.0, 0.55), np.ones(3, np.float32), 0.35)
    rim = _hued(colour, (1.0, 0.8, 0.4), 1.0, 1.0)
    body = core + (rim - core) * smoothstep(0.3 * radius, radius, d)[..., None]
    p.fill(body, box.disc(0.5, 0.5, radius))


def _moon(p: _Paint, box: _Box, colour: RGB | None, light: Light, rng: np.random.Generator) -> None:
    radius = 0.3 * box.bw
    d = box.distance(0.5, 0.5)
    pale = _hued(colour, (0.93, 0.94, 0.98), 0.95, 0.5)
    p.glow(d, 0.6 * box.bw, lerp(pale, light.mean, 0.3), 0.3)
    h, w = p.canvas.shape[:2]
    maria = smoothstep(0.3, 1.4, noise(rng, h, w, 2.2, False))[..., None]
    body = pale * (1.0 - 0.18 * maria) * (1.0 - 0.25 * smoothstep(0.6 * radius, radius, d))[..., None]
    p.fill(body, box.disc(0.5, 0.5, radius))


def _shade(box: _Box, light: Light, round_: float = 0.3) -> np.ndarray:
    """Across a round body: lit on the scene's brighter side, darker on the other."""
    across = np.clip((box.u() - 0.5) * 2.0, -1.0, 1.0)
    return (1.0 + round_ * (light.side if light.side else 0.6) * across - 0.12 * across**2)[..., None]


def _boat(p: _Paint, box: _Box, colour: RGB | None, light: Light, rng: np.random.Generator) -> None:
    hull_colour = light.lit(_hued(colour, (0.36, 0.2, 0.11)))
    sail_colour = light.lit((0.95, 0.93, 0.86))
    # Its reflection first: the water under the hull darkened, in broken horizontal streaks.
    h, w = p.canvas.shape[:2]
    streaks = smoothstep(-0.2, 0.8, noise(rng, h, w, 1.6, False, (6.0, 1.0)))
    under = box.polygon([(0.16, 0.84), (0.84, 0.84), (0.74, 1.0), (0.26, 1.0)]) * streaks
    p.shade(p.base * 0.55 + hull_colour * 0.2, under * 0.7)
    sail = np.maximum(
        box.polygon([(0.53, 0.06), (0.53, 0.66), (0.88, 0.66)]), box.polygon([(0.47, 0.14), (0.47, 0.66), (0.18, 0.66)])
    )
    p.fill(sail_colour * (1.0 - 0.12 * box.v()[..., None]), sail)
    p.fill(light.lit((0.25, 0.18, 0.12)), box.rect(0.485, 0.04, 0.515, 0.7))
    hull = box.polygon([(0.06, 0.68), (0.94, 0.68), (0.8, 0.86), (0.2, 0.86)])
    p.fill(hull_colour * _shade(box, light, 0.15), hull)


def _lighthouse(p: _Paint, box: _Box, colour: RGB | None, light: Light, rng: np.random.Generator) -> None:
    white = light.lit((0.94, 0.93, 0.88))
    stripe = light.lit(_hued(colour, (0.78, 0.12, 0.1)))
    v = box.v()[..., None]
    bands = (np.floor((v - 0.24) / 0.19) % 2 == 1).astype(np.float32)
    tower = box.polygon([(0.18, 1.0), (0.82, 1.0), (0.67, 0.24), (0.33, 0.24)])
    body = lerp(white[None, None, :] * np.ones_like(v), stripe, bands) * _shade(box, light, 0.35)
    p.fill(body, tower)
    dark = light.lit((0.16, 0.16, 0.18))
    p.fill(dark, box.rect(0.24, 0.2, 0.76, 0.245))
    lamp = np.array([1.0, 0.92, 0.62], np.float32)
    p.glow(box.distance(0.5, 0.145), 0.9 * box.bw, lamp, 0.15 + 0.45 * (1.0 - light.level))
    p.fill(dark, box.rect(0.33, 0.09, 0.67, 0.2))
    p.fill(lamp, box.rect(0.39, 0.11, 0.61, 0.19))
    p.fill(lerp(stripe, dark, 0.4), box.polygon([(0.28, 0.095), (0.72, 0.095), (0.5, 0.02)]))


def _tree(p: _Paint, box: _Box, colour: RGB | None, light: Light, rng: np.random.Generator) -> None:
    bark = light.lit((0.3, 0.2, 0.12))
    p.fill(bark * _shade(box, light, 0.3), box.polygon([(0.43, 1.0), (0.57, 1.0), (0.53, 0.5), (0.47, 0.5)]))
    h, w = p.canvas.shape[:2]
    leaves = noise(rng, h, w, 1.4, False)
    crown = np.zeros((h, w), np.float32)
    for u, vv, r in ((0.5, 0.3, 0.27), (0.3, 0.48, 0.21), (0.7, 0.48, 0.21), (0.5, 0.5, 0.22)):
        d = box.distance(u, vv) + leaves * 0.025 * box.bw
        crown = np.maximum(crown, smoothstep(r * box.bw + 1.0, r * box.bw - 1.0, d))
    green = light.lit(_hued(colour, (0.2, 0.46, 0.16)))
    top_lit = (1.1 - 0.35 * np.clip(box.v(), 0.0, 1.0))[..., None]
    foliage = green * top_lit * _shade(box, light, 0.3) * (1.0 + 0.15 * leaves)[..., None]
    p.fill(foliage, crown)


def _house(p: _Paint, box: _Box, colour: RGB | None, light: Light, rng: np.random.Generator) -> None:
    wall = light.lit(_hued(colour, (0.86, 0.8, 0.68)))
    side = np.where(box.u()[..., None] > 0.5, 1.0 + 0.12 * light.side, 1.0 - 0.12 * light.side)
    p.fill(wall * side, box.rect(0.14, 0.48, 0.86, 1.0))
    p.fill(light.lit((0.55, 0.2, 0.14)), box.polygon([(0.06, 0.5), (0.94, 0.5), (0.5, 0.1)]))
    glass = np.array([1.0, 0.82, 0.45], np.float32) if light.level < 0.3 else light.lit((0.2, 0.24, 0.3))
    for u0 in (0.22, 0.66):
        p.fill(glass, box.rect(u0, 0.6, u0 + 0.12, 0.72))
    p.fill(light.lit((0.3, 0.2, 0.14)), box.rect(0.44, 0.72, 0.56, 1.0))


def _bird(p: _Paint, box: _Box, colour: RGB | None, light: Light, rng: np.random.Generator) -> None:
    ink = lerp(_hued(colour, (0.1, 0.1, 0.12)), light.mean, 0.3)
    wings = box.stroke(
        [(0.04, 0.4), (0.2, 0.22), (0.36, 0.3), (0.5, 0.62), (0.64, 0.3), (0.8, 0.22), (0.96, 0.4)], 0.06 * box.bw
    )
    p.fill(ink, wings)


_MOTIFS = {
    "sun": _sun,
    "moon": _moon,
    "boat": _boat,
    "lighthouse": _lighthouse,
    "tree": _tree,
    "house": _house,
    "bird": _bird,
}
