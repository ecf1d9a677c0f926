"""The one place where generated pixels meet the parent image.

A candidate is blended into the parent through a feather that is 1 over the (slightly dilated)
mask and falls linearly to 0 a few pixels outside it. Where the weight is 0 the parent's pixel is
copied, so everything beyond the feather is bit-identical to the parent, whatever the engine did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


Pixels = tuple[np.ndarray, np.ndarray]  # row and column indices, as np.nonzero gives them


@dataclass(frozen=True)
class Feather:
    """How a candidate goes into its parent: copied where `inside` (the mask, weight 1), mixed on the
    ramp (within `feather_px` outside the mask, the weight falling linearly to 0), the parent's
    elsewhere. Built once per mask and shared by all candidates. The ramp is also the ring where the
    candidate's colour is measured against the parent's."""

    inside: np.ndarray  # HxW uint8, 1 on the mask
    ramp: Pixels
    ramp_weights: np.ndarray  # float32 in (0, 1), one per ramp pixel

    def dense(self) -> np.ndarray:
        """The weights as a float32 HxW array: 1 inside, the ramp, 0 beyond."""
        weights = self.inside.astype(np.float32)
        weights[self.ramp] = self.ramp_weights
        return weights

    def beyond(self) -> np.ndarray:
        """HxW bool: True where the weight is 0, the pixels that must stay the parent's."""
        outside = self.inside == 0
        outside[self.ramp] = False
        return outside


def feather(mask: np.ndarray, feather_px: int) -> Feather:
    """The feather of a bool mask: weight 1 on it, then 1 - d / (feather_px + 1) at distance d."""
    inside = mask.astype(np.uint8)
    if feather_px <= 0:
        empty = np.zeros(0, np.intp)
        return Feather(inside, (empty, empty), np.zeros(0, np.float32))
    distance = cv2.distanceTransform(1 - inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    ramp = np.nonzero((distance > 0) & (distance < feather_px + 1))
    return Feather(inside, ramp, (1.0 - distance[ramp] / (feather_px + 1)).astype(np.float32))


def composite(parent: np.ndarray, candidate: np.ndarray, how: Feather) -> np.ndarray:
    """Blend `candidate` into `parent`; pixels beyond the feather are the parent's, bit for bit, and
    pixels on the mask the candidate's. Arithmetic is done only on the ramp, a thin band."""
    if parent.shape != candidate.shape:
        raise ValueError(f"candidate {candidate.shape} does not match parent {parent.shape}")
    out = parent.copy()
    cv2.copyTo(candidate, how.inside, out)
    under, over = parent[how.ramp].astype(np.float32), candidate[how.ramp].astype(np.float32)
    out[how.ramp] = np.clip(np.rint(under + (over - under) * how.ramp_weights[:, None]), 0, 255).astype(np.uint8)
    return out


def changed_beyond(parent: np.ndarray, image: np.ndarray, beyond: np.ndarray) -> int:
    """How many pixels of `image` where `beyond` is True differ from `parent` in any channel: the
    measurement that the composite kept its promise (0), taken on the pixels that are saved."""
    # OpenCV's SIMD passes, not NumPy's: this runs on every candidate (four 2048² images for a 2x zoom)
    difference = cv2.absdiff(parent, image)
    if difference.ndim == 3:  # a pixel differs if any of its channels does
        channels = cv2.split(difference)
        difference = channels[0]
        for channel in channels[1:]:
            difference = cv2.bitwise_or(difference, channel)
    return cv2.countNonZero(cv2.bitwise_and(difference, difference, mask=beyond.view(np.uint8)))
