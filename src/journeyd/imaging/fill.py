"""Colour priors for masked areas.

`blur_fill` is Fooocus' fill: before anything paints into a hole, the hole is flooded with a smooth
extension of the surrounding colours, so whatever is painted on top starts from colours that already
continue the known pixels instead of from black or stretched edges.
"""

from __future__ import annotations

import cv2
import numpy as np

# (box kernel, passes), coarse to fine: the wide kernels carry colour deep into the hole, the narrow
# ones smooth the seam against the known pixels that are restored after every pass.
_SCHEDULE: tuple[tuple[int, int], ...] = (
    (512, 2),
    (256, 2),
    (128, 4),
    (64, 4),
    (33, 8),
    (15, 8),
    (5, 16),
    (3, 16),
)


def blur_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill `mask` (True = unknown) in an HxW or HxWxC image by repeated box blurs.

    After every blur the known pixels are put back, so colour diffuses from the hole's border
    inwards; the result keeps `image`'s dtype and its known pixels bit-identical. An 8-bit image
    is blurred in 8 bits, as Fooocus does: about 3x faster than in float32, and within 2-3 levels
    of it (each pass rounds, and the hole is a smooth gradient either way).
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    hole = mask.astype(bool)
    if not hole.any() or hole.all():
        # Nothing to fill, or nothing to fill it from.
        return image.copy()

    known = (~hole).astype(np.uint8)
    source = image if image.dtype == np.uint8 else image.astype(np.float32)
    current = source.copy()
    height, width = hole.shape
    rows, cols = np.nonzero(hole.any(axis=1))[0], np.nonzero(hole.any(axis=0))[0]
    for kernel, passes in _SCHEDULE:
        # A kernel wider than the image only averages reflections of it; clamp to keep cv2 happy.
        k = max(1, min(kernel, height, width))
        # Only the hole changes (known pixels are put back), and a blurred hole pixel reads k/2
        # around it: blurring the hole's bounding box plus that margin gives the same hole.
        margin = k // 2 + 1
        box = (
            slice(max(0, rows[0] - margin), min(height, rows[-1] + 1 + margin)),
            slice(max(0, cols[0] - margin), min(width, cols[-1] + 1 + margin)),
        )
        work, work_source, work_known = current[box].copy(), source[box], known[box]
        for _ in range(passes):
            work = cv2.blur(work, (k, k))
            cv2.copyTo(work_source, work_known, work)
        current[box] = work

    if np.issubdtype(image.dtype, np.integer) and current.dtype != image.dtype:
        info = np.iinfo(image.dtype)
        current = np.clip(np.rint(current), info.min, info.max)
    result = current.astype(image.dtype)
    np.copyto(result, image, where=(known > 0) if image.ndim == 2 else (known > 0)[..., None])
    return result
