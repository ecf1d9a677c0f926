"""Colour matching: make a repainted region agree with what surrounds it.

Diffusion models (and the VAE round trip) shift colour and contrast a little; pasted back, the new
region then reads as a patch. The fix users settled on (A1111's colour correction, IOPaint's
histogram matching on unmasked pixels) is to measure the shift where the candidate should agree
with the parent — a ring just outside the mask — and undo it. Where the two already agree the
correction is the identity.
"""

from __future__ import annotations

import cv2
import numpy as np

from journeyd.imaging.composite import Pixels


def match_colour(candidate: np.ndarray, parent: np.ndarray, ring: Pixels) -> np.ndarray:
    """`candidate` with per-channel mean and spread matched to `parent` over `ring`, the pixels just
    outside the repainted area (row and column indices). Both images HxWx3 uint8."""
    rows, cols = ring
    # A mean and a spread need no more than every other row and column of the ring (a quarter of it).
    sampled = ((rows | cols) & 1) == 0
    if np.count_nonzero(sampled) >= 16:
        rows, cols = rows[sampled], cols[sampled]
    if rows.size < 16:
        return candidate
    ours = candidate[rows, cols].astype(np.float32)
    theirs = parent[rows, cols].astype(np.float32)
    mean_ours, mean_theirs = ours.mean(axis=0), theirs.mean(axis=0)
    spread = np.clip((theirs.std(axis=0) + 1.0) / (ours.std(axis=0) + 1.0), 0.5, 2.0)
    if np.allclose(mean_ours, mean_theirs, atol=0.5) and np.allclose(spread, 1.0, atol=0.01):
        return candidate
    # The correction is per channel and per value: a 256-entry table per channel, applied by cv2.LUT.
    values = np.arange(256, dtype=np.float32)[:, None]
    table = np.clip(np.rint((values - mean_ours) * spread + mean_theirs), 0, 255).astype(np.uint8)
    return cv2.LUT(candidate, table.reshape(256, 1, 3))
