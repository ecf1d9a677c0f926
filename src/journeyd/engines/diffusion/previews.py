"""Step previews from latents, with no extra weights (no TAESD): a linear latent-to-RGB map.

The map is fitted once per model from the model's own VAE: a few smooth random colour images are
encoded, and least squares finds the affine map from each latent cell to the mean colour of the
pixels it covers. It is rough — colours and layout, not detail — which is what a progress preview
needs, and it costs one small matrix product per preview.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

FIT_IMAGES = 6
FIT_SIZE = 128


@torch.no_grad()
def fit(vae: Any) -> np.ndarray:
    """An (channels + 1) x 3 matrix: latents (as the denoiser sees them, plus a 1) to RGB in 0..1."""
    rng = np.random.default_rng(0)
    images = []
    for _ in range(FIT_IMAGES):  # smooth colour fields, so every latent cell covers a steady colour
        small = rng.random((4, 4, 3)).astype(np.float32)
        images.append(cv2.resize(small, (FIT_SIZE, FIT_SIZE), interpolation=cv2.INTER_CUBIC))
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).clip(0, 1)
    parameter = next(vae.parameters())
    latents = vae.encode((pixels * 2 - 1).to(parameter.device, parameter.dtype)).latent_dist.mean
    latents = (latents - (getattr(vae.config, "shift_factor", None) or 0.0)) * vae.config.scaling_factor
    size = latents.shape[-1]
    targets = torch.nn.functional.adaptive_avg_pool2d(pixels, size)  # the colour each latent cell covers
    x = latents.float().cpu().permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).numpy()
    y = targets.permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    x = np.concatenate([x, np.ones((len(x), 1), np.float32)], axis=1)
    return np.linalg.lstsq(x, y, rcond=None)[0].astype(np.float32)


def of(model: Any, pipeline: Any, latents: torch.Tensor, size: tuple[int, int], index: int = 0) -> np.ndarray | None:
    """A preview of candidate `index` of a batch being drawn at `size`, or None if these latents
    cannot be read."""
    if model.preview_map is None:
        model.preview_map = fit(pipeline.vae)
    if latents.ndim == 3:  # FLUX packs latents as (batch, tokens, channels * 4)
        unpack = getattr(pipeline, "_unpack_latents", None)
        if unpack is None:
            return None
        latents = unpack(latents, size[1], size[0], pipeline.vae_scale_factor)
    first = latents[index].float().cpu().permute(1, 2, 0).numpy()
    if first.shape[-1] + 1 != model.preview_map.shape[0]:
        return None
    rgb = np.concatenate([first, np.ones((*first.shape[:2], 1), np.float32)], axis=-1) @ model.preview_map
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
