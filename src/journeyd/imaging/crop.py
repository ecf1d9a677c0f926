"""Where to look when repainting a region: the mask's box, grown to give the model context.

A model repaints best at its native resolution with some of the surroundings in view, so Vary
(Region) works on a crop around the mask (Fooocus' "inpaint respective field") that is resized to
the model's size, rather than on the whole picture shrunk down.
"""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def context_box(mask: np.ndarray, *, field: float = 0.618, margin: float = 1.15) -> Box:
    """A box around the mask: the mask's bounding square grown by `margin`, and at least `field` of
    the image in each direction, shifted to stay inside the image."""
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0, 0, width, height
    cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
    half = margin * max(xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()) / 2
    half_w, half_h = max(half, width * field / 2), max(half, height * field / 2)
    x0, x1 = _span(cx, half_w, width)
    y0, y1 = _span(cy, half_h, height)
    return x0, y0, x1, y1


def _span(centre: float, half: float, limit: int) -> tuple[int, int]:
    size = min(limit, max(1, round(2 * half)))
    start = min(max(0, round(centre - size / 2)), limit - size)
    return start, start + size
