"""What an image's pixels say about it, in prompt words: palette, colourfulness, light, composition.

Describe adds these to the captioning model's sentence. They are measured, not guessed: hue and
saturation histograms, brightness and contrast, where the edges and the strongest horizontal line are.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from journeyd.engines.base import Image

# OpenCV hue (0..180) bands and their names
HUES = ((10, "red"), (22, "orange"), (34, "golden"), (78, "green"), (100, "teal"), (130, "blue"), (155, "violet"))
HUE_WRAP = "crimson"  # 155..180 wraps back to red
SATURATED = 60  # a pixel's saturation (0..255) from which its hue counts in the palette


@dataclass(frozen=True)
class Looks:
    palette: str  # "teal and golden tones"
    colour: str  # "vivid colours"
    light: str  # "soft, warm light"
    composition: str  # "low horizon, subject left of centre, wide framing"


def looks_of(image: Image) -> Looks:
    small = _small(image)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return Looks(_palette(hsv), _colourfulness(hsv), _light(small, grey), _composition(grey, image.shape))


def _small(image: Image) -> Image:
    """At most 128 pixels across: statistics need no more, and it keeps them quick."""
    height, width = image.shape[:2]
    scale = min(1.0, 128 / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image


def _hue_name(hue: int) -> str:
    return next((name for top, name in HUES if hue < top), HUE_WRAP)


def _palette(hsv: np.ndarray) -> str:
    """The two commonest hues among colourful pixels, or the greys of a colourless image."""
    saturated = hsv[..., 1] >= SATURATED
    if saturated.mean() < 0.15:
        value = float(hsv[..., 2].mean())
        return "charcoal and grey tones" if value < 110 else ("silver and white tones" if value > 180 else "grey tones")
    counts: dict[str, int] = {}
    for hue in hsv[..., 0][saturated].ravel().tolist():
        name = _hue_name(hue)
        counts[name] = counts.get(name, 0) + 1
    names = sorted(counts, key=lambda name: -counts[name])
    if len(names) == 1 or counts[names[1]] < 0.2 * counts[names[0]]:
        return f"{names[0]} tones"
    return f"{names[0]} and {names[1]} tones"


def _colourfulness(hsv: np.ndarray) -> str:
    saturation = float(hsv[..., 1].mean())
    if saturation < 25:
        return "monochrome"
    if saturation < 70:
        return "muted colours"
    return "vivid colours" if saturation > 140 else "natural colours"


def _light(rgb: Image, grey: np.ndarray) -> str:
    brightness, contrast = float(grey.mean()), float(grey.std())
    key = "dim, low-key" if brightness < 80 else ("bright, high-key" if brightness > 175 else "even")
    softness = "soft" if contrast < 40 else ("dramatic" if contrast > 70 else "balanced")
    red, _, blue = (float(rgb[..., c].mean()) for c in range(3))
    warmth = "warm" if red > blue + 12 else ("cool" if blue > red + 12 else "neutral")
    return f"{softness}, {key} {warmth} light"


def _composition(grey: np.ndarray, shape: tuple[int, ...]) -> str:
    """Where the detail is (the centroid of edge energy), the strongest horizontal line (a horizon),
    and the framing the aspect ratio gives."""
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    energy = np.hypot(gx, gy)
    total = float(energy.sum())
    words = []
    if total > 0:
        columns = np.arange(energy.shape[1], dtype=np.float32)
        x = float((energy.sum(axis=0) * columns).sum()) / total / max(1, energy.shape[1] - 1)
        across = "left of centre" if x < 0.4 else ("right of centre" if x > 0.6 else "centred")
        words.append(f"{across} subject")
        horizontal = np.abs(gy).mean(axis=1)
        if horizontal.size > 4 and horizontal.max() > 2.5 * max(float(horizontal.mean()), 1e-6):
            line = int(horizontal.argmax()) / (horizontal.size - 1)
            words.append("high horizon" if line < 0.4 else ("low horizon" if line > 0.6 else "horizon at mid-height"))
    height, width = shape[:2]
    words.append(
        "wide framing" if width > 1.2 * height else ("tall framing" if height > 1.2 * width else "square framing")
    )
    return ", ".join(words)
