"""Step previews from latents, with no extra weights (no TAESD): a linear latent-to-RGB map.

The map is fitted once per model, at load, from the model's own VAE: a few smooth random colour images are
encoded, and least squares finds the affine map from each latent cell to the mean colour of the
pixels it covers. It is rough — colours and layout, not detail — which is what a progress preview
needs, and it costs one small matrix product per preview.

On a GPU the product runs there and its result is copied to the CPU without waiting (`Pending`): a
blocking copy would drain the GPU's queue of kernels every few steps and leave it idle while the
worker encodes and stores the preview. The preview is handed over at the next step that finds the
copy done, one step later than it was taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

FIT_IMAGES = 6
FIT_SIZE = 128


@torch.no_grad()
def fit(vae: Any) -> torch.Tensor:
    """An (channels + 1) x 3 matrix on the VAE's device: latents (as the denoiser sees them, plus a 1)
    to RGB in 0..1."""
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
    return torch.from_numpy(np.linalg.lstsq(x, y, rcond=None)[0].astype(np.float32)).to(parameter.device)


@dataclass
class Pending:
    """A preview on its way to the CPU."""

    rgb: torch.Tensor  # HxWx3 in 0..1, on the CPU; being written until `copied` has happened
    copied: torch.cuda.Event | None = None

    def ready(self) -> bool:
        return self.copied is None or self.copied.query()

    def image(self) -> np.ndarray:
        return (self.rgb.clamp(0, 1) * 255).to(torch.uint8).numpy()


def start(model: Any, pipeline: Any, latents: torch.Tensor, size: tuple[int, int], index: int = 0) -> Pending | None:
    """Begin a preview of candidate `index` of a batch being drawn at `size`, or None if these
    latents cannot be read."""
    if latents.ndim == 3:  # FLUX packs latents as (batch, tokens, channels * 4)
        unpack = getattr(pipeline, "_unpack_latents", None)
        if unpack is None:
            return None
        latents = unpack(latents, size[1], size[0], pipeline.vae_scale_factor)
    cells, weights = latents[index].float().permute(1, 2, 0), model.preview_map
    if cells.shape[-1] + 1 != weights.shape[0]:
        return None
    rgb = cells @ weights[:-1] + weights[-1]
    if rgb.device.type != "cuda":
        return Pending(rgb.cpu())
    copied = torch.cuda.Event()
    host = rgb.to("cpu", non_blocking=True)
    copied.record()
    return Pending(host, copied)
