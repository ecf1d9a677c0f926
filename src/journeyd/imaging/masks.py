"""Turning what a client drew into a repaint mask.

Conventions differ between APIs (midjourney-proxy: white on black; apimart: white on transparent),
so both are read the same way: a pixel is repainted when it is opaque AND bright. The mask may
come at any size; it is resized to the parent image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from journeyd.domain.errors import Unprocessable


def mask_from_image(image: Image.Image, size: tuple[int, int], *, what: str = "mask") -> np.ndarray:
    """A bool HxW mask (True = repaint) at `size` = (width, height)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    rgba = np.asarray(image.convert("RGBA"))
    luminance = np.asarray(image.convert("RGBA").convert("L"))
    repaint = luminance >= 128
    if has_alpha:
        repaint &= rgba[..., 3] >= 128
    if not repaint.any():
        raise Unprocessable(
            f"{what} selects nothing to repaint: paint the region to change in white "
            "on a black or transparent background"
        )
    if repaint.shape[::-1] != tuple(size):
        # Resample the coverage, then threshold: smoother edges than nearest-neighbour for small masks.
        coverage = Image.fromarray(repaint.astype(np.uint8) * 255).resize(size, Image.Resampling.BILINEAR)
        repaint = np.asarray(coverage) >= 128
        if not repaint.any():
            raise Unprocessable(f"{what} selects a region too small to see once resized to {size[0]}x{size[1]}")
    return repaint


def mask_to_png_pixels(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.uint8) * 255
