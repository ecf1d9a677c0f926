"""Blend for the classic engine: one image's structure in another's colours, never a plain average.

For each tile the seed picks an ordered pair of the images: the first gives the structure (its edges and
fine detail), the second its palette, moved over by colour transfer (each Lab channel's mean and spread,
as Reinhard et al. do), and its large shapes, which come in softly under the first one's detail. With three
or more images, a third lends a little of its large shapes too. Which pair, how much of the second image's
layout, and where each is cropped vary with the seed, so the four tiles differ even for two images.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from journeyd.engines.base import Image, Progress
from journeyd.engines.classic.fields import seeded_rng


def blend_images(
    images: Sequence[Image], size: tuple[int, int], seeds: Sequence[int], progress: Progress
) -> list[Image]:
    if not 2 <= len(images) <= 5:
        raise ValueError(f"blend mixes 2 to 5 images, got {len(images)}")
    width, height = size
    progress(0, len(seeds))
    out = []
    for done, seed in enumerate(seeds, start=1):
        rng = seeded_rng(seed, b"", b"blend")
        order = rng.permutation(len(images))
        structure_at, palette_at = int(order[0]), int(order[1])
        crops = [_cover(image, width, height, rng.uniform(0.3, 0.7, 2)) for image in images]
        structure, palette = _lab(crops[structure_at]), _lab(crops[palette_at])
        # the structure's layout in the palette image's colour statistics
        mixed = (structure - structure.mean((0, 1))) / (structure.std((0, 1)) + 1e-3)
        mixed = mixed * palette.std((0, 1)) + palette.mean((0, 1))
        # large shapes: some of the palette image's, and of a third image's when there is one
        sigma = max(width, height) / 24
        layout_weight = rng.uniform(0.25, 0.45)
        mixed = mixed + layout_weight * (_low(palette, sigma) - _low(mixed, sigma))
        if len(images) > 2:
            third = _lab(crops[int(order[2])])
            mixed = mixed + 0.2 * (_low(third, sigma) - _low(mixed, sigma))
        out.append(_rgb(mixed))
        progress(done, len(seeds), out[0])
    return out


def _cover(image: Image, width: int, height: int, centre: np.ndarray) -> np.ndarray:
    """Resize to fill (width, height), cropping the overflow around `centre` (fractions of the spare room)."""
    ih, iw = image.shape[:2]
    scale = max(width / iw, height / ih) * 1.1  # a little spare room for the crop to move in
    rw, rh = max(width, round(iw * scale)), max(height, round(ih * scale))
    resized = cv2.resize(np.ascontiguousarray(image[..., :3]), (rw, rh), interpolation=cv2.INTER_AREA)
    left, top = int((rw - width) * centre[0]), int((rh - height) * centre[1])
    return resized[top : top + height, left : left + width]


def _lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _rgb(lab: np.ndarray) -> Image:
    lab = np.stack([np.clip(lab[..., 0], 0, 100), np.clip(lab[..., 1], -127, 127), np.clip(lab[..., 2], -127, 127)], -1)
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _low(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma)
