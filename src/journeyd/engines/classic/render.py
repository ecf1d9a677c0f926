"""Rendering one picture: per-image choices, the palette field, the scene's layers, the finish.

`render` draws everything from one generator seeded by (seed, prompt words), in a fixed order;
moving, adding or skipping a draw changes every picture after it, so keep the order.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable

import cv2
import numpy as np

from journeyd.domain.prompt import PromptSpec
from journeyd.engines.classic.fields import blur, lerp, luma, noise, seeded_rng, smoothstep
from journeyd.engines.classic.lexicon import MOTIF_OF, RGB, SCENIC
from journeyd.engines.classic.recipe import Recipe, read_region_prompt
from journeyd.engines.classic.region import STANDING, stand_in_scene
from journeyd.engines.classic.scene import (
    Scene,
    draw_city,
    draw_desert,
    draw_disc,
    draw_fire,
    draw_forest,
    draw_mountains,
    draw_sky,
    draw_subject,
    draw_water,
    hsv_jitter,
    sprinkle,
)

STAGES = 3  # progress ticks per rendered picture: base field, scene layers, finish


def _weirdness(prompt: PromptSpec) -> float:
    """--weird as 0..1."""
    return min(prompt.weird or 0, 3000) / 3000.0


def render(
    recipe: Recipe, prompt: PromptSpec, width: int, height: int, seed: int, tick: Callable[[], None]
) -> np.ndarray:
    """One picture as float32 RGB in 0..1."""
    rng = seeded_rng(seed, recipe.key)
    h, w, tile = height, width, prompt.tile
    chaos = (prompt.chaos or 0) / 100.0
    weird = _weirdness(prompt)

    # Per-image choices: palette, theme strengths, layout. Chaos widens every spread.
    palette = _jitter_palette(recipe, rng, chaos, weird)
    themes = {name: s * math.exp(rng.normal(0.0, 0.15 + 0.4 * chaos)) for name, s in recipe.themes.items()}
    surprise = SCENIC[int(rng.integers(len(SCENIC)))]
    if rng.random() < 0.6 * chaos and surprise not in themes:
        themes[surprise] = rng.uniform(0.4, 1.0)
    horizon = float(np.clip(0.6 + rng.normal(0.0, 0.05 + 0.15 * chaos), 0.35, 0.8))
    total = sum(wt for _, wt in palette)
    mean = sum(c * wt for c, wt in palette) / total

    ys = (np.arange(h, dtype=np.float32) + 0.5) / h
    v = (0.5 - 0.5 * np.cos(2 * np.pi * ys)).astype(np.float32) if tile else ys
    v = v[:, None]
    x = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]

    img = _base_field(palette, rng, v, x, tile)
    field_colours = img.copy() if "space" in themes else None
    tick()

    scenic = any(name in themes for name in SCENIC)
    sky_top, sky_low = _sky_colours(themes, mean, rng)
    if "sky" in recipe.tints:  # "a pink sky"
        tint = np.asarray(recipe.tints["sky"])
        sky_top, sky_low = (
            tuple(np.asarray(sky_top) * 0.4 + tint * 0.6),
            tuple(np.asarray(sky_low) * 0.5 + tint * 0.5),
        )
    sc = Scene(
        rng=rng,
        h=h,
        w=w,
        tile=tile,
        v=v,
        horizon=horizon,
        mean=mean.astype(np.float32),
        sky_top=np.asarray(sky_top, np.float32),
        sky_low=np.asarray(sky_low, np.float32),
        tints=recipe.tints,
    )
    sun = None
    if scenic:
        img, sun = draw_sky(img, sc, themes)
    if "mountains" in themes:
        img = draw_mountains(img, sc, themes["mountains"], snowy="snow" in themes)
    if "desert" in themes:
        img = draw_desert(img, sc)
    if "water" in themes:
        img = draw_water(img, sc, sun)
    windows = None
    if "city" in themes:
        img, windows = draw_city(img, sc, has_ground="water" in themes or "desert" in themes)
    if "grass" in themes and "forest" not in themes:
        img = draw_forest(img, sc, themes["grass"], over_water="water" in themes, trees=False)
    if "forest" in themes:
        img = draw_forest(img, sc, themes["forest"], over_water="water" in themes, trees=True)

    # Night and space dim what was painted (the night sky less: it is night-coloured already);
    # lights, stars, the subject and flames come after.
    dark = max(themes.get("night", 0.0), themes.get("space", 0.0), 0.7 * themes.get("moon", 0.0))
    if dark > 0:
        amount = min(dark, 1.0)
        if scenic:
            dim: np.ndarray | float = (1.0 - 0.6 * amount * (1.0 - 0.6 * sc.open_sky()))[..., None]
        else:
            dim = 1.0 - 0.55 * amount
        img = lerp(img * dim, np.array([0.02, 0.03, 0.1], np.float32), 0.2 * amount)
    if windows is not None:
        glow = np.array([1.0, 0.82, 0.45] if dark > 0 else [0.75, 0.82, 0.9], np.float32)
        img = lerp(img, glow, windows * (0.9 if dark > 0 else 0.35))
    if field_colours is not None:
        nebula = smoothstep(0.2, 2.2, noise(rng, h, w, 2.4, tile))
        img = img + (nebula * 0.7)[..., None] * field_colours
    if dark > 0:
        where = sc.open_sky() if scenic else 1.0
        img = img + (sprinkle(sc, 0.004 * min(dark, 1.5), 0.6) * where)[..., None]
    if "moon" in themes:
        img, _, _ = draw_disc(img, sc, (0.93, 0.94, 0.98), (0.35, 0.4, 0.55), high=True)
    if "fire" in themes:
        img = draw_fire(img, sc, themes["fire"])
    snow = min(themes.get("snow", 0.0), 1.5)
    if snow > 0:
        pale = np.array([0.93, 0.96, 1.0], np.float32)
        img = lerp(img, pale, 0.25 * snow)
        if scenic:
            # A snowfield with soft drifts over the ground.
            drifts = noise(rng, h, w, 2.6, tile, (4.0, 1.0))
            field = (
                pale * (0.9 + 0.06 * drifts)[..., None]
                - np.array([0.08, 0.04, 0.0], np.float32) * (drifts < 0)[..., None]
            )
            img = lerp(img, field, sc.ground(0.02) * min(1.0, 0.8 * snow))
    # A motif named in a scene stands in it ("a small boat on the sea"), drawn instead of the figure
    # the subject would get; it has its own rng, so pictures without one are as they always were.
    motif = read_region_prompt(prompt) if scenic else None
    standing = motif is not None and motif.motif in STANDING
    # The subject goes in front of the scene (even of flames), so it is never hidden.
    if "subject" in themes and not (standing and MOTIF_OF.get(recipe.subject or "") == motif.motif):
        img = draw_subject(img, sc, recipe, chaos, 1.0 - 0.35 * min(dark, 1.0), scenic)
    if snow > 0:
        img = img + (sprinkle(sc, 0.003 * snow, 1.0) * 0.9)[..., None]
    if standing:
        img = stand_in_scene(img, motif, horizon, seeded_rng(seed, recipe.key, b"motif"))
    tick()

    img = _finish(img, prompt, recipe, rng, v, x)
    tick()
    return img


def _palette_lut(palette: list[tuple[np.ndarray, float]], size: int = 1024) -> np.ndarray:
    """A colour ramp where each colour owns a stretch proportional to its weight, dark to light."""
    ordered = sorted(palette, key=lambda item: float(luma(item[0])))
    weights = np.array([w for _, w in ordered], dtype=np.float64)
    edges = np.cumsum(weights / weights.sum())
    index = np.minimum(np.searchsorted(edges, (np.arange(size) + 0.5) / size), len(ordered) - 1)
    lut = np.stack([ordered[i][0] for i in index]).astype(np.float32)
    # Soft transitions between neighbouring colours, not hard posterised steps.
    sigma = size * 0.025
    return cv2.GaussianBlur(lut[:, None, :], (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)[:, 0, :]


def _jitter_palette(
    recipe: Recipe, rng: np.random.Generator, chaos: float, weird: float
) -> list[tuple[np.ndarray, float]]:
    """This picture's take on the recipe's palette: colours and weights jittered, more so with chaos."""
    hue = 5.0 + 60.0 * chaos
    jittered = []
    for colour, weight in recipe.palette:
        c = hsv_jitter(colour, rng, hue, 0.1 + 0.3 * chaos, 0.08 + 0.2 * chaos)
        jittered.append((c, weight * math.exp(rng.normal(0.0, 0.25 + 0.8 * chaos))))
    # Chaos and weirdness invite a colour nobody asked for.
    extra = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.9)), np.float32)
    share = 0.6 * chaos + 0.8 * weird
    if share > 0.01:
        total = sum(w for _, w in jittered)
        jittered.append((extra, total * share))
    return jittered


def _sky_colours(scene_themes: dict[str, float], mean: np.ndarray, rng: np.random.Generator) -> tuple[RGB, RGB]:
    """(top, horizon) sky colours for the time of day, tinted a little towards the palette."""
    night = max(scene_themes.get("night", 0.0), scene_themes.get("moon", 0.0) * 0.8)
    warm = scene_themes.get("sunset", 0.0)
    if night > 0 and night >= warm:
        top, low = (0.01, 0.02, 0.07), (0.12, 0.15, 0.36)
    elif warm > 0:
        top, low = (0.32, 0.18, 0.45), (1.00, 0.62, 0.30)
    else:
        top, low = (0.28, 0.50, 0.85), (0.78, 0.87, 0.96)
    tint = 0.3 + 0.1 * rng.random()
    return (
        tuple(np.asarray(top) * (1 - tint) + mean * tint),
        tuple(np.asarray(low) * (1 - tint) + mean * tint),
    )


def _base_field(
    palette: list[tuple[np.ndarray, float]], rng: np.random.Generator, v: np.ndarray, x: np.ndarray, tile: bool
) -> np.ndarray:
    """The palette painted through a smooth noise field, lighter colours drifting to the top."""
    h, w = v.shape[0], x.shape[1]
    lut = _palette_lut(palette)
    colour_noise = noise(rng, h, w, 3.2, tile)
    light_noise = noise(rng, h, w, 2.0, tile)
    u = 1.0 / (1.0 + np.exp(-1.7 * colour_noise))  # ~ Gaussian CDF: areas follow palette weights
    u = np.clip(u + (0.5 - v) * 0.35, 0.0, 1.0)
    img = lut[(u * (len(lut) - 1)).astype(np.int32)]
    img *= (1.0 + 0.12 * light_noise)[..., None]
    if not tile:
        tilt = rng.normal(0.0, 0.12)
        img *= (1.08 - 0.22 * v + tilt * (x - 0.5))[..., None]
    return img


def _finish(
    img: np.ndarray,
    prompt: PromptSpec,
    recipe: Recipe,
    rng: np.random.Generator,
    v: np.ndarray,
    x: np.ndarray,
) -> np.ndarray:
    """Grain, stylisation and the `--no` colours: the last pass over a rendered picture."""
    h, w, tile = img.shape[0], img.shape[1], prompt.tile
    quality = prompt.quality or 1.0
    # --q: finer, stronger grain for more quality; lower quality also softens the picture.
    grain = noise(rng, h, w, 1.5 - 0.2 * math.log2(quality), tile)
    img = img * (1.0 + 0.03 * quality**0.3 * grain)[..., None]
    if quality < 1:
        img = blur(img, 1.5 * (1.0 - quality), tile)

    stylize = (prompt.stylize if prompt.stylize is not None else 100) / 1000.0
    if prompt.style == "raw":
        stylize *= 0.5
    img = np.clip(img, 0.0, 1.0)
    curve = img * img * (3.0 - 2.0 * img)
    img = img + (0.2 + 0.8 * stylize) * (curve - img)
    if not tile:
        r2 = (x - 0.5) ** 2 + (v - 0.5) ** 2
        img = img * (1.0 - (0.15 + 0.35 * stylize) * r2)[..., None]

    hsv = cv2.cvtColor(np.ascontiguousarray(img, dtype=np.float32), cv2.COLOR_RGB2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sat *= (0.92 + 1.1 * stylize**0.75) * recipe.saturation
    val *= recipe.brightness
    weird = _weirdness(prompt)
    if weird:
        shift = noise(rng, h, w, 3.0, tile) * (40.0 + 140.0 * weird) * weird**0.5 + rng.uniform(0, 90) * weird
        hue[...] = (hue + shift) % 360.0
    for colour in recipe.avoid:
        ah, a_s, av = colorsys.rgb_to_hsv(*colour)
        if a_s >= 0.25:
            dist = np.abs((hue - ah * 360.0 + 180.0) % 360.0 - 180.0)
            sat *= 1.0 - 0.92 * (1.0 - smoothstep(18.0, 40.0, dist))
        elif av < 0.25:
            val[...] = val + (0.3 - val) * (1.0 - smoothstep(0.12, 0.3, val))
        elif av > 0.8:
            val[...] = val - (val - 0.72) * smoothstep(0.72, 0.9, val) * (1.0 - smoothstep(0.1, 0.3, sat))
    np.clip(sat, 0.0, 1.0, out=sat)
    np.clip(val, 0.0, 1.0, out=val)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
