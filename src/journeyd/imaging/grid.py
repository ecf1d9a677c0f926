"""The 2x2 grid Midjourney shows for four images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def make_grid(images: Sequence[np.ndarray]) -> np.ndarray:
    """Tile four same-sized images 2x2 at full resolution (U1 top left, U4 bottom right)."""
    if len(images) != 4:
        raise ValueError(f"a grid needs 4 images, got {len(images)}")
    if len({image.shape for image in images}) != 1:
        raise ValueError("grid images must share one size")
    top = np.concatenate(images[:2], axis=1)
    bottom = np.concatenate(images[2:], axis=1)
    return np.concatenate([top, bottom], axis=0)
