"""Describe for the classic engine: what the image's own pixels say, in its lexicon's words.

No model looks at the picture. It is measured: its main colours (k-means, named after the nearest colour
the lexicon knows), its brightness and saturation, where a horizon line runs, where the light comes
from, how busy it is, and which of the lexicon's scenes have colours like its top and bottom halves.
The words say only what those measurements support: "a dusky landscape with a low horizon, in copper
and navy tones", never "a fox".
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from journeyd.engines.base import Image, Progress
from journeyd.engines.classic.fields import seeded_rng
from journeyd.engines.classic.lexicon import COLOURS, SCENIC, THEME_COLOURS

_SIDE = 96  # the image is measured at about this size: colours and layout survive, noise does not
_CLUSTERS = 4
# What a scene is called in a caption
SCENE_NOUNS = {
    "sunset": "sunset landscape",
    "sun": "sunny landscape",
    "sky": "open sky",
    "water": "seascape",
    "forest": "forest",
    "grass": "meadow",
    "mountains": "mountain landscape",
    "night": "night scene",
    "space": "starfield",
    "moon": "moonlit night",
    "city": "cityscape",
    "snow": "snowfield",
    "fire": "blaze of fire",
    "desert": "desert",
}
_TONES = ("tones", "hues", "colours")


@dataclass(frozen=True)
class Looks:
    """The measurements a description is worded from."""

    colours: tuple[str, ...]  # colour names, the largest share first
    brightness: float  # mean luma 0..1
    saturation: float  # mean HSV saturation 0..1
    contrast: float  # luma standard deviation
    busy: float  # share of edge pixels
    horizon: float | None  # height of the horizon line, 0 = top, 1 = bottom; None: no clear one
    light: str  # where the brightest third of the picture is: "upper left", "centre", ...
    scene: str | None  # the lexicon theme whose colours fit best, if any fits


def look(image: Image, seed: int) -> Looks:
    h, w = image.shape[:2]
    scale = _SIDE / max(h, w)
    small = cv2.resize(
        image[..., :3], (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    rgb = small.astype(np.float32) / 255.0
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV).astype(np.float32) / 255.0

    # k-means from seeded centres: a Retry (another seed) may split the colours a little differently
    pixels = rgb.reshape(-1, 3)
    rng = seeded_rng(seed, b"", b"describe")
    count = min(_CLUSTERS, len(np.unique(pixels, axis=0)))
    centres = pixels[rng.choice(len(pixels), size=count, replace=False)]
    for _ in range(8):
        labels = np.argmin(((pixels[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        centres = np.stack([pixels[labels == k].mean(0) if (labels == k).any() else centres[k] for k in range(count)])
    shares = np.bincount(labels, minlength=count) / len(pixels)
    names: list[str] = []
    for k in np.argsort(-shares):
        name = _colour_name(tuple(centres[k]))
        if name not in names and shares[k] > 0.08:
            names.append(name)

    edges = cv2.Canny(small, 60, 160) > 0
    rows = grey.mean(axis=1)
    step = np.abs(np.diff(cv2.GaussianBlur(rows.reshape(-1, 1), (1, 5), 0).ravel()))
    horizon = None
    if len(step) > 4 and step.max() > 0.06:
        row = int(np.argmax(step[2:-2])) + 2
        if step[row] > 3 * (np.median(step) + 1e-3):
            horizon = (row + 1) / len(rows)

    gh, gw = grey.shape
    thirds = [
        grey[i * gh // 3 : (i + 1) * gh // 3, j * gw // 3 : (j + 1) * gw // 3].mean()
        for i in range(3)
        for j in range(3)
    ]
    i, j = divmod(int(np.argmax(thirds)), 3)
    vertical, horizontal = ("upper", "", "lower")[i], ("left", "", "right")[j]
    light = " ".join(p for p in (vertical, horizontal) if p) or "centre"

    half = len(rgb) // 2
    return Looks(
        colours=tuple(names[:3]) or (_colour_name(tuple(pixels.mean(0))),),
        brightness=float(grey.mean()),
        saturation=float(hsv[..., 1].mean()),
        contrast=float(grey.std()),
        busy=float(edges.mean()),
        horizon=horizon,
        light=light,
        scene=_scene(rgb[:half].reshape(-1, 3).mean(0), rgb[half:].reshape(-1, 3).mean(0), horizon is not None),
    )


def describe_image(image: Image, seed: int, progress: Progress) -> list[str]:
    """Four prompts: caption; caption and style; caption and lighting/composition; a shortened one."""
    progress(0, 4)
    looks = look(image, seed)
    progress(1, 4)
    rng = seeded_rng(seed, b"", b"describe-words")
    mood = _mood(looks.brightness)
    kind = (
        SCENE_NOUNS[looks.scene]
        if looks.scene
        else ("landscape" if looks.horizon is not None else "abstract composition")
    )
    horizon = ""
    if looks.horizon is not None:
        place = "low" if looks.horizon > 0.6 else "high" if looks.horizon < 0.4 else "centred"
        horizon = f" with a {place} horizon"
    colours = _and(looks.colours[:2])
    caption = f"{_article(mood)} {mood} {kind}{horizon}, in {colours} {_TONES[int(rng.integers(len(_TONES)))]}"

    texture = "busy, finely detailed textures" if looks.busy > 0.12 else "smooth gradients, little fine detail"
    palette = (
        "vivid saturated colour"
        if looks.saturation > 0.5
        else "muted colour"
        if looks.saturation < 0.25
        else "soft natural colour"
    )
    medium = ("painterly", "procedural", "abstract digital")[int(rng.integers(3))]
    style = f"{caption}, {medium} style, {palette}, {texture}"

    contrast = (
        "high contrast" if looks.contrast > 0.22 else "low contrast" if looks.contrast < 0.1 else "gentle contrast"
    )
    light = "light in the centre" if looks.light == "centre" else f"light from the {looks.light}"
    framing = (
        "wide horizontal framing"
        if image.shape[1] > image.shape[0] * 1.15
        else ("tall vertical framing" if image.shape[0] > image.shape[1] * 1.15 else "square framing")
    )
    lighting = f"{caption}, {light}, {contrast}, {framing}"

    short = f"{mood} {kind}, {', '.join(looks.colours[:3])}"
    progress(4, 4)
    prompts = [caption, style, lighting, short]
    if len(set(prompts)) < 4:  # cannot happen with the wording above; kept honest rather than padded
        raise ValueError(f"classic describe wrote repeated prompts: {prompts}")
    return prompts


def _colour_name(rgb: tuple[float, ...]) -> str:
    lab = _lab(np.array(rgb, dtype=np.float32))
    names = list(COLOURS)
    table = _lab(np.array([COLOURS[n] for n in names], dtype=np.float32))
    return names[int(np.argmin(((table - lab) ** 2).sum(-1)))]


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.reshape(-1, 1, 3).astype(np.float32), cv2.COLOR_RGB2LAB).reshape(rgb.shape)


def _scene(top: np.ndarray, bottom: np.ndarray, has_horizon: bool) -> str | None:
    """The theme whose colours are nearest the picture's halves, if near enough to name."""
    best, best_distance = None, 0.0
    for theme, colours in THEME_COLOURS.items():
        # a sky-over-ground scene needs the horizon it is drawn with; a forest, sea or city can fill the frame
        if theme in SCENIC and not has_horizon and theme not in ("forest", "water", "city"):
            continue
        palette = np.array(colours, dtype=np.float32)
        distance = min(((palette - top) ** 2).sum(-1)) + min(((palette - bottom) ** 2).sum(-1))
        if best is None or distance < best_distance:
            best, best_distance = theme, float(distance)
    return best if best is not None and best_distance < 0.15 else None


def _mood(brightness: float) -> str:
    if brightness < 0.2:
        return "dark"
    if brightness < 0.38:
        return "dusky"
    if brightness > 0.72:
        return "bright"
    if brightness > 0.55:
        return "light"
    return "softly lit"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _and(words: tuple[str, ...]) -> str:
    return words[0] if len(words) == 1 else f"{words[0]} and {words[1]}"
