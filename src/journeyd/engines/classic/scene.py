"""A picture's scene layers: sun and moon, ridges, dunes, water, trees, skylines, fire, a figure.

Each `draw_*` paints one structure over the picture so far, drawing its randomness from the
scene's generator, so the order `render` calls them in is part of every picture's identity.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np

from journeyd.engines.classic.fields import blur, lerp, noise, noise1d, smoothstep, wrap_delta
from journeyd.engines.classic.lexicon import ANIMALS, PEOPLE, RGB, THEME_COLOURS
from journeyd.engines.classic.recipe import Recipe


@dataclass
class Scene:
    """Per-image drawing state shared by the layers."""

    rng: np.random.Generator
    h: int
    w: int
    tile: bool
    v: np.ndarray  # (h, 1) layout height 0 = top .. 1 = bottom; periodic (0 at both edges) on a tile
    horizon: float
    mean: np.ndarray  # palette's weighted mean colour
    sky_top: np.ndarray
    sky_low: np.ndarray
    tints: dict[str, RGB]  # theme -> colour named with it
    sky: np.ndarray = field(init=False)  # (h, 1) 1 above the horizon
    cover: np.ndarray = field(init=False)  # (h, w) how much of the sky structures (ridges, trees, buildings) hide

    def __post_init__(self) -> None:
        self.sky = 1.0 - self.ground()
        self.cover = np.zeros((self.h, self.w), np.float32)

    def tinted(self, theme: str, colour: np.ndarray | RGB) -> np.ndarray:
        """A structure's colour, pulled towards the colour the prompt named with it."""
        colour = np.asarray(colour, np.float32)
        tint = self.tints.get(theme)
        return colour if tint is None else colour * 0.35 + np.asarray(tint, np.float32) * 0.65

    def ground(self, below: float = 0.0) -> np.ndarray:
        """(h, 1) 1 below the horizon (lowered by `below`), with a soft edge."""
        return smoothstep(self.horizon + below - 0.004, self.horizon + below + 0.004, self.v)

    def depth(self) -> np.ndarray:
        """(h, 1) how far below the horizon: 0 on it (and above), 1 at the bottom."""
        return np.clip((self.v - self.horizon) / max(1e-3, 1.0 - self.horizon), 0.0, 1.0)

    def under(self, top: np.ndarray, soft_px: float) -> np.ndarray:
        """Coverage below a skyline `top` (in layout heights), its edge softened over `soft_px` pixels."""
        return smoothstep(-soft_px / self.h, soft_px / self.h, self.v - top)

    def open_sky(self) -> np.ndarray:
        """(h, w) the sky that no structure drawn so far hides."""
        return self.sky * (1.0 - self.cover)

    def add_structure(self, img: np.ndarray, layer: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Paint a structure that hides the sky (ridge, trees, buildings): later sky layers go behind it."""
        self.cover = np.maximum(self.cover, mask)
        return lerp(img, layer, mask)

    def row_of(self, v: float) -> float:
        """Pixel row of layout height `v` (the upper one on a tile, where `v` rises then falls)."""
        if self.tile:
            return math.acos(float(np.clip(1.0 - 2.0 * v, -1.0, 1.0))) / (2.0 * math.pi) * self.h
        return v * self.h

    def x_offsets(self, cx: float) -> np.ndarray:
        """(1, w) pixel centres' offsets from column `cx`; the short way round on a tile."""
        return wrap_delta(np.arange(self.w, dtype=np.float32)[None, :] + 0.5 - cx, self.w, self.tile)

    def distance(self, cx: float, cy: float, sx: float = 1.0, sy: float = 1.0) -> np.ndarray:
        """Pixel distance to (cx, cy), axes scaled by 1/sx, 1/sy; wraps round on a tile."""
        dx = self.x_offsets(cx) / sx
        dy = wrap_delta(np.arange(self.h, dtype=np.float32)[:, None] + 0.5 - cy, self.h, self.tile) / sy
        return np.sqrt(dx * dx + dy * dy)


def hsv_jitter(colour: RGB, rng: np.random.Generator, hue_deg: float, sat: float, val: float) -> np.ndarray:
    """`colour` with its hue moved by ~`hue_deg` degrees and saturation and value scaled by ~e^`sat`, e^`val`."""
    h, s, v = colorsys.rgb_to_hsv(*colour)
    h = (h + rng.normal(0.0, hue_deg) / 360.0) % 1.0
    s = float(np.clip(s * math.exp(rng.normal(0.0, sat)), 0.0, 1.0))
    v = float(np.clip(v * math.exp(rng.normal(0.0, val)), 0.0, 1.0))
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def draw_disc(img: np.ndarray, sc: Scene, colour: RGB, glow: RGB, high: bool) -> tuple[np.ndarray, float, float]:
    """Sun or moon: a disc with a soft glow, setting behind the horizon; returns the image, its column and radius."""
    rng = sc.rng
    radius = rng.uniform(0.045, 0.08) * min(sc.h, sc.w)
    lift = rng.uniform(0.25, 0.55) if high else rng.uniform(0.05, 0.2)
    cx = rng.uniform(0.15, 0.85) * sc.w
    cy = sc.row_of(max(0.03, sc.horizon * (1 - lift) - 0.02))
    d = sc.distance(cx, cy)
    halo = np.exp(-((d / (4.0 * radius)) ** 2)) * 0.55 + np.exp(-((d / (12.0 * radius)) ** 2)) * 0.25
    open_sky = sc.open_sky()  # behind ridges, trees and buildings already drawn
    img = img + (halo * (0.4 + 0.6 * open_sky))[..., None] * (np.asarray(glow, np.float32) - img * 0.5)
    disc = smoothstep(radius + 1.0, radius - 1.0, d) * open_sky
    return lerp(img, np.asarray(colour, np.float32), disc), cx, radius


def draw_sky(img: np.ndarray, sc: Scene, themes: dict[str, float]) -> tuple[np.ndarray, tuple[float, float] | None]:
    """A gradient sky above the horizon, maybe clouds, and a sun.

    Returns the image and, if there is a sun, its (column, radius) for the water to reflect.
    """
    rng, v, horizon = sc.rng, sc.v, sc.horizon
    t = np.clip(v / horizon, 0.0, 1.0) ** 0.9
    sky_colour = sc.sky_top * (1 - t[..., None]) + sc.sky_low * t[..., None]
    img = lerp(img, sky_colour, sc.sky * 0.85)
    if "sky" in themes or ("night" not in themes and rng.random() < 0.5):
        clouds = noise(rng, sc.h, sc.w, 2.6, sc.tile, (3.0, 1.0))
        amount = 0.35 + 0.4 * min(themes.get("sky", 0.5), 1.5)
        alpha = smoothstep(0.2, 1.6, clouds) * sc.sky * amount * (0.4 + 0.6 * np.clip(1 - v / horizon, 0, 1))
        img = lerp(img, sc.sky_low * 0.4 + 0.6, alpha)
    if "sunset" not in themes and "sun" not in themes:
        return img, None
    warm = themes.get("sunset", 0) >= themes.get("sun", 0)
    disc, glow = ((1.0, 0.85, 0.55), (1.0, 0.55, 0.25)) if warm else ((1.0, 0.98, 0.86), (1.0, 0.92, 0.7))
    img, cx, radius = draw_disc(img, sc, disc, glow, high=not warm)
    return img, (cx, radius)


def draw_mountains(img: np.ndarray, sc: Scene, strength: float, snowy: bool) -> np.ndarray:
    """Two or three ridges on the horizon, hazier with distance, some (all when `snowy`) with snowcaps."""
    rng = sc.rng
    base = sc.tinted("mountains", np.asarray(THEME_COLOURS["mountains"][rng.integers(3)]) * 0.7 + sc.mean * 0.3)
    layers = 2 + int(rng.random() < 0.6)
    rock = noise(rng, sc.h, sc.w, 1.8, sc.tile, (1.0, 0.35))  # vertical gullies
    for i in range(layers):
        near = (i + 1) / layers
        profile = noise1d(rng, sc.w, 2.2, sc.tile)[None, :]
        height = (0.12 + 0.16 * strength / 2 + rng.uniform(0.0, 0.1)) * (1.15 - 0.35 * near)
        ridge = sc.horizon + 0.03 * i - height * (1.0 + 0.45 * profile)
        ridge = np.clip(ridge, 0.04, sc.horizon + 0.05)
        mask = sc.under(ridge, 1.2)
        haze = 0.6 * (1.0 - near)
        colour = base * (0.55 + 0.35 * (1 - near)) * (1 - haze) + sc.sky_low * haze
        depth = np.clip((sc.v - ridge) / 0.35, 0.0, 1.0)
        shade = (1.0 - 0.3 * depth) * (1.0 + 0.08 * rock)
        layer = colour[None, None, :] * shade[..., None]
        if snowy or rng.random() < 0.3:
            cap = (1.0 - smoothstep(0.0, 0.035 + 0.02 * rng.random(), sc.v - ridge)) * (profile > -0.2)
            layer = lerp(layer, np.array([0.93, 0.95, 0.99], np.float32) * (1 - haze * 0.3), cap * 0.85)
        img = sc.add_structure(img, layer, mask)
    return img


def draw_desert(img: np.ndarray, sc: Scene) -> np.ndarray:
    """Sand below the horizon, banded by dunes that crowd together towards the horizon."""
    rng = sc.rng
    sand = sc.tinted("desert", np.asarray(THEME_COLOURS["desert"][rng.integers(3)]) * 0.8 + sc.mean * 0.2)
    depth = sc.depth() ** 0.6
    wobble = noise(rng, sc.h, sc.w, 3.0, sc.tile, (0.7, 1.0))
    bands = np.sin(2 * np.pi * (rng.uniform(4, 8) * depth + 0.35 * wobble))
    shade = 0.82 + 0.16 * bands + 0.1 * depth
    return lerp(img, sand[None, None, :] * shade[..., None], sc.ground())


def draw_water(img: np.ndarray, sc: Scene, sun: tuple[float, float] | None) -> np.ndarray:
    """Waves below the horizon, with foam and, given a `sun` (column, radius), its streak of reflection."""
    rng = sc.rng
    deep = sc.tinted("water", np.asarray(THEME_COLOURS["water"][0]) * 0.75 + sc.mean * 0.25)
    depth = sc.depth()
    # Horizontal swell plus finer ripples that grow towards the viewer.
    swell = noise(rng, sc.h, sc.w, 2.4, sc.tile, (7.0, 1.0))
    ripple = noise(rng, sc.h, sc.w, 1.5, sc.tile, (5.0, 1.0))
    waves = swell * (0.6 + 0.4 * depth) + ripple * (0.25 + 0.5 * depth)
    surface = sc.sky_low * 0.6 + deep * 0.4
    colour = lerp(np.broadcast_to(surface, (sc.h, 1, 3)), deep, depth**0.6)
    layer = colour * (1.0 + 0.14 * waves)[..., None]
    foam = smoothstep(1.3, 2.4, waves) * (0.3 + 0.5 * depth)
    layer = lerp(layer, np.array([0.92, 0.95, 0.98], np.float32), foam)
    if sun is not None:
        cx, radius = sun
        dx = sc.x_offsets(cx)
        streak = np.exp(-((dx / (radius * (1.2 + 3.0 * depth))) ** 2)) * (waves > 0.2) * 0.7
        layer = lerp(layer, np.array([1.0, 0.85, 0.6], np.float32), streak)
    return lerp(img, layer, sc.ground())


def draw_forest(img: np.ndarray, sc: Scene, strength: float, over_water: bool, trees: bool) -> np.ndarray:
    """Green ground with vertical texture; with `trees`, two rows of conifer crowns on the horizon."""
    rng = sc.rng
    theme = "forest" if trees else "grass"
    greens = [sc.tinted(theme, np.asarray(c) * 0.8 + sc.mean * 0.2) for c in THEME_COLOURS[theme][:3]]
    streaks = noise(rng, sc.h, sc.w, 1.9, sc.tile, (1.0, 5.0))  # vertical, like trunks, needles and blades
    leaves = noise(rng, sc.h, sc.w, 1.2, sc.tile)
    mix = np.clip(0.5 + 0.25 * streaks + 0.15 * leaves, 0.0, 1.0)
    xs = np.arange(sc.w, dtype=np.float32) + 0.5
    for row in range(2 if trees else 1):
        if trees:
            spacing = (0.035 if row == 0 else 0.06) * min(sc.h, sc.w) / max(0.5, min(strength, 1.5))
            count = max(4, int(sc.w / spacing))
            centres = rng.random(count) * sc.w
            tall = (0.09 if row == 0 else 0.2) * rng.uniform(0.55, 1.0, count)
            half = tall * sc.h * rng.uniform(0.22, 0.32, count)
            dx = np.abs(wrap_delta(xs[None, :] - centres[:, None], sc.w, sc.tile))
            crowns = np.max(tall[:, None] * (1.0 - dx / half[:, None]), axis=0).astype(np.float32)
            top = (sc.horizon + 0.015 * row - np.maximum(crowns, 0.01))[None, :]
        else:
            top = np.full((1, sc.w), sc.horizon, np.float32)
        mask = sc.under(top, 1.0)
        if over_water:
            mask = mask * (1.0 - sc.ground(0.012))
        layer = lerp(np.broadcast_to(greens[2], (sc.h, sc.w, 3)), greens[row], mix)
        shade = (1.0 - 0.35 * np.clip((sc.v - top) / 0.4, 0.0, 1.0)) * (1.0 + 0.1 * streaks)
        layer = layer * shade[..., None]
        if row == 0 and trees:
            layer = lerp(layer, sc.sky_low, 0.3)  # the far row sits in the haze
        img = sc.add_structure(img, layer, mask)
    return img


def draw_city(img: np.ndarray, sc: Scene, has_ground: bool) -> tuple[np.ndarray, np.ndarray]:
    """Skyline blocks on the horizon; returns the image and where the windows are (lit later)."""
    rng = sc.rng
    grey = sc.tinted("city", np.asarray(THEME_COLOURS["city"][rng.integers(3)]) * 0.7 + sc.mean * 0.3)
    cell = max(3.0, min(sc.h, sc.w) * 0.012)
    # Window grid periods that divide the canvas, so a tile's grid wraps.
    period_x = sc.w / max(1, round(sc.w / (2.2 * cell)))
    period_y = sc.h / max(1, round(sc.h / (2.6 * cell)))
    # A random phase, so no column of window edges lines up with the frame (or a tile's seam).
    px = np.arange(sc.w) + 0.5 + rng.uniform(0.0, period_x)
    py = np.arange(sc.h) + 0.5 + rng.uniform(0.0, period_y)
    cols, rows = round(sc.w / period_x), round(sc.h / period_y)
    col = np.floor(px / period_x).astype(np.int64) % cols
    row = np.floor(py / period_y).astype(np.int64) % rows
    cells = rng.random((rows, cols), dtype=np.float32)
    lit = rng.uniform(0.15, 0.35)
    # Lit windows at different brightness; the rest stay dark.
    lit_cells = np.where(cells < lit, 0.45 + 0.55 * cells / lit, 0.0).astype(np.float32)
    in_x = (px % period_x) < cell
    in_y = (py % period_y) < cell * 1.3
    grid = lit_cells[row[:, None], col[None, :]] * (in_x[None, :] & in_y[:, None])
    windows = np.zeros((sc.h, sc.w), np.float32)
    for layer_index in range(2):
        heights = np.zeros(sc.w, np.float32)
        tint = np.zeros(sc.w, np.float32)
        start = int(rng.integers(sc.w))
        pos = 0
        while pos < sc.w:
            width = int(rng.uniform(0.025, 0.07) * sc.w) + 2
            tall = rng.uniform(0.06, 0.22) + (rng.uniform(0.1, 0.22) if rng.random() < 0.2 else 0.0)
            columns = (start + np.arange(pos, min(pos + width, sc.w))) % sc.w
            heights[columns] = tall * (1.25 if layer_index == 0 else 1.0)
            tint[columns] = rng.uniform(0.75, 1.15)
            pos += width
        top = (sc.horizon - heights)[None, :]
        mask = sc.under(top, 0.8)
        if has_ground:
            mask = mask * (1.0 - sc.ground(0.004))
        haze = 0.45 if layer_index == 0 else 0.0
        colour = grey * (1 - haze) + sc.sky_low * haze
        layer = colour[None, None, :] * tint[None, :, None] * (1.0 - 0.25 * sc.v)[..., None]
        img = sc.add_structure(img, layer, mask)
        inside = smoothstep(0.01, 0.02, sc.v - top) * mask
        windows = np.maximum(windows * (1.0 - mask), grid * inside * (0.4 if layer_index == 0 else 1.0))
    return img, windows


def draw_fire(img: np.ndarray, sc: Scene, strength: float) -> np.ndarray:
    """Flames rising from the bottom, coloured along a black-body ramp; stronger fire reaches higher."""
    rng = sc.rng
    tongues = noise(rng, sc.h, sc.w, 2.0, sc.tile, (1.0, 3.0))  # long vertical flames
    flicker = noise(rng, sc.h, sc.w, 1.4, sc.tile)
    base = rng.uniform(0.3, 0.55) - 0.1 * min(strength, 1.5)
    heat = np.clip((sc.v - base) / (1.0 - base) * 1.3 + 0.35 * tongues + 0.12 * flicker, 0.0, 1.0) ** 1.4
    # Black body ramp: dark red -> red -> orange -> yellow -> near white.
    stops = np.array([0.0, 0.3, 0.55, 0.8, 1.0], np.float32)
    ramp = np.array(
        [[0.05, 0.0, 0.0], [0.6, 0.06, 0.02], [0.95, 0.35, 0.05], [1.0, 0.72, 0.2], [1.0, 0.95, 0.75]],
        np.float32,
    )
    flat = heat.ravel()
    fire = np.stack([np.interp(flat, stops, ramp[:, c]) for c in range(3)], axis=-1).reshape(sc.h, sc.w, 3)
    return img * (1.0 - 0.85 * heat[..., None]) + fire.astype(np.float32) * heat[..., None]


def sprinkle(sc: Scene, density: float, sigma: float) -> np.ndarray:
    """Sparse bright points (stars, snowflakes) as an HxW float field."""
    rng = sc.rng
    count = int(sc.h * sc.w * density)
    points = np.zeros((sc.h, sc.w), np.float32)
    ys, xs = rng.integers(0, sc.h, count), rng.integers(0, sc.w, count)
    points[ys, xs] = rng.random(count, dtype=np.float32) ** 3
    return np.clip(blur(points, sigma, sc.tile) * (2 * np.pi * sigma * sigma), 0.0, 1.0)


def draw_subject(img: np.ndarray, sc: Scene, recipe: Recipe, chaos: float, ambient: float, scenic: bool) -> np.ndarray:
    """A central figure: body and head ellipses (plus ears for animals), outline wobbled by noise."""
    rng = sc.rng
    unit = min(sc.h, sc.w) * rng.uniform(0.15, 0.22)
    cx = sc.w * (0.5 + rng.normal(0.0, 0.06 + 0.15 * chaos))
    cy = sc.h * (0.56 + rng.normal(0.0, 0.04 + 0.1 * chaos))
    if scenic:
        # In a landscape the figure stands on the ground in front of the horizon, not in the sky.
        feet = sc.row_of(min(0.97, sc.horizon + rng.uniform(0.1, 0.22)))
        cy = feet - 1.0 * unit
    if recipe.subject in PEOPLE:
        parts = [(cx, cy + 0.35 * unit, 0.55, 1.05), (cx, cy - 0.95 * unit, 0.36, 0.42)]
    elif recipe.subject in ANIMALS:
        side = 1.0 if rng.random() < 0.5 else -1.0
        hx, hy = cx + side * 0.55 * unit, cy - 0.6 * unit
        parts = [
            (cx, cy + 0.25 * unit, 0.95, 0.62),
            (hx, hy, 0.42, 0.38),
            (hx - 0.22 * unit, hy - 0.38 * unit, 0.12, 0.2),
            (hx + 0.22 * unit, hy - 0.38 * unit, 0.12, 0.2),
        ]
    else:
        parts = [(cx, cy, 0.8 + rng.uniform(-0.1, 0.1), 0.8 + rng.uniform(-0.1, 0.1))]
    sdf = np.full((sc.h, sc.w), np.inf, np.float32)
    for px, py, rx, ry in parts:
        d = sc.distance(px, py, rx * unit, ry * unit)
        sdf = np.minimum(sdf, (d - 1.0) * min(rx, ry) * unit)
    wobble = noise(sc.rng, sc.h, sc.w, 3.0, sc.tile)
    sdf = sdf + wobble * unit * 0.05
    alpha = np.clip(0.5 - sdf / 1.5, 0.0, 1.0)
    # Round shading lit from one side, plus a soft shadow on the ground below.
    inner = np.clip(-sdf / (0.5 * unit), 0.0, 1.0)
    light = rng.uniform(-1.0, 1.0)
    dx = wrap_delta(np.arange(sc.w, dtype=np.float32)[None, :] - cx, sc.w, sc.tile) / unit
    shade = 0.55 + 0.4 * np.sqrt(inner) + 0.12 * np.clip(light * dx, -1.5, 1.5)
    colour = hsv_jitter(recipe.subject_colour or (0.5, 0.5, 0.5), rng, 6.0 + 40.0 * chaos, 0.08, 0.08)
    figure = colour[None, None, :] * (shade * ambient)[..., None]
    shadow = np.exp(-((sc.distance(cx, cy + 1.1 * unit, 1.3 * unit, 0.25 * unit)) ** 2)) * 0.45
    img = img * (1.0 - shadow[..., None])
    return lerp(img, figure, alpha)
