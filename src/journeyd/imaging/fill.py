"""Colour priors for masked areas.

`blur_fill` is Fooocus' fill: before anything paints into a hole, the hole is flooded with a smooth
extension of the surrounding colours, so whatever is painted on top starts from colours that already
continue the known pixels instead of from black or stretched edges.
"""

from __future__ import annotations

from collections.abc import Sequence

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


# Exemplar fill: sources are searched on a copy whose long side is about this many pixels, the hole cut
# into about this many cells a side, each cell copied from its own source.
_SEARCH_SIDE = 192
_CELLS = 5
_CHOICES = 3  # each cell's best sources, one picked per candidate


def exemplar_fill(image: np.ndarray, mask: np.ndarray, rngs: Sequence[np.random.Generator]) -> list[np.ndarray]:
    """`image` (HxWx3 uint8) with `mask` filled by texture copied from elsewhere in the image, once
    per generator in `rngs` (the search is shared; each generator picks its own sources).

    Image quilting, coarse: the hole is cut into overlapping cells; each cell copies the known
    window that best matches what is known around it and, inside the hole, a smooth guess of the
    layout (`blur_fill`), so sky is filled from sky and the sea from the sea; each fill picks among
    each cell's few best. The cells are cross-faded, then a membrane (the difference to the known pixels
    around the hole, spread smoothly over it) corrects the light, so the fill meets the border
    without a step. Known pixels stay bit-identical.
    """
    hole = mask.astype(bool)
    h, w = hole.shape
    if not hole.any() or hole.all():
        return [image.copy() for _ in rngs]
    scale = min(1.0, _SEARCH_SIDE / max(h, w))
    sw, sh = max(8, round(w * scale)), max(8, round(h * scale))
    small = cv2.resize(image[..., :3], (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
    small_hole = cv2.resize(hole.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA) > 0.0
    guide = blur_fill(small, small_hole)
    guard = cv2.dilate(small_hole.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)

    rows, cols = np.nonzero(small_hole.any(axis=1))[0], np.nonzero(small_hole.any(axis=0))[0]
    top, left = int(rows[0]), int(cols[0])
    span_y, span_x = int(rows[-1]) + 1 - top, int(cols[-1]) + 1 - left
    cell = max(6, -(-max(span_y, span_x) // _CELLS))
    lap = max(2, cell // 3)  # each cell's window reaches this far into its neighbours
    # Each cell: its window at full size, and the shifts of its best sources.
    cells: list[tuple[slice, slice, np.ndarray, list[tuple[int, int]]]] = []
    for y0 in range(top, top + span_y, cell):
        for x0 in range(left, left + span_x, cell):
            wy0, wx0 = max(0, y0 - lap), max(0, x0 - lap)
            wy1, wx1 = min(sh, y0 + cell + lap), min(sw, x0 + cell + lap)
            window_hole = small_hole[wy0:wy1, wx0:wx1]
            if not window_hole[y0 - wy0 : y0 - wy0 + cell, x0 - wx0 : x0 - wx0 + cell].any():
                continue
            shifts = _cell_sources(small, guide, guard, window_hole, (wy0, wx0))
            if shifts:
                fy0, fx0 = int(wy0 / scale), int(wx0 / scale)
                fy1, fx1 = min(h, int(np.ceil(wy1 / scale))), min(w, int(np.ceil(wx1 / scale)))
                fade = _tent(fy1 - fy0, lap / scale)[:, None] * _tent(fx1 - fx0, lap / scale)[None, :]
                full = [(round(dy / scale), round(dx / scale)) for dy, dx in shifts]
                cells.append((slice(fy0, fy1), slice(fx0, fx1), fade, full))
    base = blur_fill(image, hole)
    fills = []
    for rng in rngs:
        total = np.zeros((h, w, 3), np.float32)
        weights = np.zeros((h, w), np.float32)
        for rows_, cols_, fade, shifts in cells:
            # The window copied from one of its sources, faded in and out over its overlaps.
            dy, dx = shifts[int(rng.integers(len(shifts)))]
            yy = np.clip(np.arange(rows_.start, rows_.stop) + dy, 0, h - 1)
            xx = np.clip(np.arange(cols_.start, cols_.stop) + dx, 0, w - 1)
            total[rows_, cols_] += base[yy[:, None], xx[None, :]] * fade[..., None]
            weights[rows_, cols_] += fade
        covered = weights > 1e-3
        quilt = np.where(covered[..., None], total / np.maximum(weights, 1e-3)[..., None], base.astype(np.float32))
        fills.append(_membrane_corrected(image, hole, _regrain(quilt, image, hole)))
    return fills


def _regrain(fill: np.ndarray, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """`fill` with its fine detail in the hole as strong as the image's around it: cross-fading the
    cells averages textures, which would leave the hole softer than its surroundings."""
    rows, cols = np.nonzero(hole.any(axis=1))[0], np.nonzero(hole.any(axis=0))[0]
    pad = 24
    box = (slice(max(0, rows[0] - pad), rows[-1] + 1 + pad), slice(max(0, cols[0] - pad), cols[-1] + 1 + pad))
    region = hole[box]
    ring = (cv2.dilate(region.astype(np.uint8), np.ones((2 * pad + 1, 2 * pad + 1), np.uint8)) > 0) & ~region
    if not ring.any():
        return fill
    detail = fill[box] - cv2.GaussianBlur(fill[box], (0, 0), 1.5)
    known = image[box].astype(np.float32)
    around = float((known - cv2.GaussianBlur(known, (0, 0), 1.5))[ring].std())
    gain = float(np.clip(around / (float(detail[region].std()) + 1e-3), 1.0, 1.8))
    out = fill.copy()
    out[box] += detail * (gain - 1.0) * region[..., None]
    return out


def _tent(n: int, ramp: float) -> np.ndarray:
    """1 in the middle of n samples, falling smoothly to near 0 over `ramp` samples at each end."""
    i = np.arange(n, dtype=np.float32) + 0.5
    edge = np.minimum(i, n - i) / max(ramp, 1.0)
    t = np.clip(edge, 0.02, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _cell_sources(
    small: np.ndarray, guide: np.ndarray, guard: np.ndarray, window_hole: np.ndarray, corner: tuple[int, int]
) -> list[tuple[int, int]]:
    """(dy, dx) of the few known windows most like this one (not neighbouring copies of one another):
    its known pixels matched closely, its hole pixels loosely to the guide; none if all read the hole."""
    wy0, wx0 = corner
    wh, ww = window_hole.shape
    template = np.where(
        window_hole[..., None], guide[wy0 : wy0 + wh, wx0 : wx0 + ww], small[wy0 : wy0 + wh, wx0 : wx0 + ww]
    )
    weight = np.where(window_hole, 0.15, 1.0).astype(np.float32)
    cost = cv2.matchTemplate(small, template, cv2.TM_SQDIFF, mask=np.repeat(weight[..., None], 3, axis=2))
    overlap = cv2.matchTemplate(guard, window_hole.astype(np.float32), cv2.TM_CCORR)
    ys, xs = np.mgrid[0 : cost.shape[0], 0 : cost.shape[1]]
    reach = np.hypot(ys - wy0, xs - wx0) / max(small.shape[:2])
    cost = cost / weight.sum() * (1.0 + 0.5 * reach)
    cost[overlap > 0.5] = np.inf
    flat = cost.ravel()
    best = np.argpartition(flat, _CHOICES * 4)[: _CHOICES * 4] if flat.size > _CHOICES * 4 else np.arange(flat.size)
    best = best[np.argsort(flat[best])]
    best = best[np.isfinite(flat[best])]
    picks: list[int] = []
    for index in best.tolist():
        y, x = divmod(index, cost.shape[1])
        if all(abs(y - py) + abs(x - px) > 2 for py, px in (divmod(p, cost.shape[1]) for p in picks)):
            picks.append(index)
        if len(picks) == _CHOICES:
            break
    return [(y - wy0, x - wx0) for y, x in (divmod(p, cost.shape[1]) for p in picks)]


def _membrane_corrected(image: np.ndarray, hole: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """`image` with `hole` taken from `fill` (float, HxWx3) plus a smooth correction that makes the fill
    agree with the image around the hole: their difference there, spread over the hole by `blur_fill`.
    The membrane is smooth, so it is solved small: known differences averaged per cell, then filled."""
    h, w = hole.shape
    rows, cols = np.nonzero(hole.any(axis=1))[0], np.nonzero(hole.any(axis=0))[0]
    margin = 8 + max(rows[-1] - rows[0], cols[-1] - cols[0]) // 8
    box = (
        slice(max(0, rows[0] - margin), min(h, rows[-1] + 1 + margin)),
        slice(max(0, cols[0] - margin), min(w, cols[-1] + 1 + margin)),
    )
    box_hole = hole[box]
    known = (~box_hole).astype(np.float32)
    # Clipped, so a few sparkles on the border (foam, stars) do not spread a haze over the hole.
    diff = np.clip(image[box].astype(np.float32) - fill[box], -24.0, 24.0) * known[..., None]
    bh, bw = box_hole.shape
    s = min(1.0, 128.0 / max(bh, bw))
    size = (max(4, round(bw * s)), max(4, round(bh * s)))
    weight = cv2.resize(known, size, interpolation=cv2.INTER_AREA)
    small = cv2.resize(diff, size, interpolation=cv2.INTER_AREA) / np.maximum(weight, 1e-6)[..., None]
    small = blur_fill(small.astype(np.float32), weight < 0.999)
    membrane = cv2.resize(small, (bw, bh), interpolation=cv2.INTER_LINEAR)
    filled = np.clip(fill[box] + membrane + 0.5, 0, 255).astype(np.uint8)
    result = image.copy()
    np.copyto(result[box], filled, where=box_hole[..., None])
    return result
