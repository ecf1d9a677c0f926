"""Canvases for Zoom Out and Pan: the parent placed on a larger canvas, the new area masked.

The parent keeps its own pixel scale, so its pixels stay bit-identical beyond the feather. The new
area is pre-filled by replicating the parent's edges: engines start from plausible colours
instead of black, which is what causes seams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MULTIPLE = 8  # canvas sides are multiples of 8, which latent diffusion models need


@dataclass(frozen=True)
class Canvas:
    image: np.ndarray  # HxWx3, the parent at `box`, the rest edge-filled
    mask: np.ndarray  # HxW bool, True on the new area
    box: tuple[int, int, int, int]  # (x, y, width, height) of the parent inside the canvas


def _round_up(value: float) -> int:
    return int(-(-round(value) // MULTIPLE) * MULTIPLE)


def _place(image: np.ndarray, width: int, height: int, x: int, y: int) -> Canvas:
    h, w = image.shape[:2]
    padded = np.pad(image, ((y, height - h - y), (x, width - w - x), (0, 0)), mode="edge")
    mask = np.ones((height, width), dtype=bool)
    mask[y : y + h, x : x + w] = False
    return Canvas(padded, mask, (x, y, w, h))


def zoom_canvas(
    image: np.ndarray, zoom: float, *, square: bool = False, aspect: tuple[int, int] | None = None
) -> Canvas:
    """Zoom Out by `zoom` (1..2), optionally to a square or to a new aspect ratio, parent centred."""
    h, w = image.shape[:2]
    width, height = max(w, _round_up(w * zoom)), max(h, _round_up(h * zoom))
    if square:
        width = height = max(width, height)
    if aspect is not None:
        ratio = aspect[0] / aspect[1]
        if width / height < ratio:
            width = _round_up(height * ratio)
        else:
            height = _round_up(width / ratio)
    return _place(image, width, height, (width - w) // 2, (height - h) // 2)


def pan_canvas(image: np.ndarray, direction: str, fraction: float = 0.5) -> Canvas:
    """Extend the canvas by `fraction` of its size towards `direction`."""
    h, w = image.shape[:2]
    if direction in ("left", "right"):
        width = w + _round_up(w * fraction)
        return _place(image, width, h, width - w if direction == "left" else 0, 0)
    if direction in ("up", "down"):
        height = h + _round_up(h * fraction)
        return _place(image, w, height, 0, height - h if direction == "up" else 0)
    raise ValueError(f"unknown pan direction {direction!r}")
