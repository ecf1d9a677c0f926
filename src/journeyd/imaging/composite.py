"""The one place where generated pixels meet the parent image.

A candidate is blended into the parent through a feather that is 1 over the (slightly dilated)
mask and falls linearly to 0 a few pixels outside it. Where the weight is 0 the parent's pixel is
copied, so everything beyond the feather is bit-identical to the parent, whatever the engine did.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def feather_for(width: int, height: int) -> tuple[int, int]:
    """(dilate_px, feather_px) for an image: 4 and 16 px at 512², 8 and 32 px at 1024² (Fooocus)."""
    side = math.sqrt(width * height)
    return max(2, round(side / 128)), max(4, round(side / 32))


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow a bool mask by `px` pixels, so the seam leaves no remnant of what was painted over."""
    if px <= 0:
        return mask.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def feather_weights(mask: np.ndarray, feather_px: int) -> np.ndarray:
    """float32 HxW: 1 on the mask, a linear ramp to 0 over `feather_px` pixels outside, 0 beyond."""
    if feather_px <= 0:
        return mask.astype(np.float32)
    outside = (~mask).astype(np.uint8)
    distance = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.clip(1.0 - distance / (feather_px + 1), 0.0, 1.0).astype(np.float32)


def composite(parent: np.ndarray, candidate: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Blend `candidate` into `parent`; pixels with weight 0 are the parent's, bit for bit, and
    pixels with weight 1 the candidate's. Arithmetic is done only on the feather's ramp, which is a
    thin band: the rest is copied."""
    if parent.shape != candidate.shape:
        raise ValueError(f"candidate {candidate.shape} does not match parent {parent.shape}")
    out = parent.copy()
    cv2.copyTo(candidate, (weights >= 1).astype(np.uint8), out)
    ramp = np.nonzero((weights > 0) & (weights < 1))
    w = weights[ramp][:, None]
    under, over = parent[ramp].astype(np.float32), candidate[ramp].astype(np.float32)
    out[ramp] = np.clip(np.rint(under + (over - under) * w), 0, 255).astype(np.uint8)
    return out
