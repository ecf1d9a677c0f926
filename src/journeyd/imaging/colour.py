"""Colour matching: make a repainted region agree with what surrounds it.

Diffusion models (and the VAE round trip) shift colour and contrast a little; pasted back, the new
region then reads as a patch. The fix users settled on (A1111's colour correction, IOPaint's
histogram matching on unmasked pixels) is to measure the shift where the candidate should agree
with the parent — a ring just outside the mask — and undo it. Where the two already agree the
correction is the identity.
"""

from __future__ import annotations

import numpy as np

from journeyd.imaging.composite import dilate


def match_colour(candidate: np.ndarray, parent: np.ndarray, mask: np.ndarray, ring_px: int) -> np.ndarray:
    """`candidate` with per-channel mean and spread matched to `parent` over a ring of `ring_px`
    around `mask`. Both images HxWx3 uint8, mask HxW bool."""
    ring = dilate(mask, ring_px) & ~mask
    if ring.sum() < 16:
        return candidate
    ours = candidate[ring].astype(np.float32)
    theirs = parent[ring].astype(np.float32)
    mean_ours, mean_theirs = ours.mean(axis=0), theirs.mean(axis=0)
    spread = np.clip((theirs.std(axis=0) + 1.0) / (ours.std(axis=0) + 1.0), 0.5, 2.0)
    if np.allclose(mean_ours, mean_theirs, atol=0.5) and np.allclose(spread, 1.0, atol=0.01):
        return candidate
    corrected = (candidate.astype(np.float32) - mean_ours) * spread + mean_theirs
    return np.clip(np.rint(corrected), 0, 255).astype(np.uint8)
