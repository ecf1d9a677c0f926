"""IP-Adapters: pictures steered by images (image prompts with --iw, Blend, --sref, --cref).

A profile's adapters (`Profile.adapters`) are loaded at start-up into its UNet with diffusers'
`load_ip_adapter`, all in one call, so they share its one CLIP image encoder. Then they are switched
off again: a UNet with an image projection refuses every call without image embeddings, and the
adapters' attention processors would take the place of the speed-ups' own on every step. A call
with references switches them on for itself (`Adapters.steering`), so every other call runs the
plain UNet, and a reference at scale 0 draws exactly what no reference draws.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from journeyd.engines.base import Image
from journeyd.engines.diffusion.profiles import Profile
from journeyd.engines.diffusion.speedups import eager

# The adapter scale at each flag's default weight (--iw 1, --sw 100, --cw 100); it grows in proportion
# to the weight, up to MAX_SCALE, past which the pictures only come apart. An image prompt at --iw 1
# shares the picture with the text; Blend has no text to share with, so its images steer fully.
SCALE_AT_DEFAULT = {"image": 0.5, "style": 0.6, "face": 0.6}
BLEND_SCALE = 1.0
MAX_SCALE = 1.5


def reference_scale(kind: str, weight: float) -> float:
    """The adapter scale for a reference of `kind` at `weight`, relative to its flag's default (1.0)."""
    return min(MAX_SCALE, max(0.0, SCALE_AT_DEFAULT[kind] * weight))


@dataclass
class Adapters:
    """A profile's IP-Adapters, loaded into its UNet and switched on only for the calls that use them."""

    kinds: tuple[str, ...]  # the reference kind each adapter steers with, in load order
    steered: dict[str, Any]  # the UNet's attention processors with the adapters
    plain: dict[str, Any]  # and without: the UNet as the rest of the engine runs it
    projection: torch.nn.Module  # the adapters' image projections (the UNet's encoder_hid_proj)
    encoder: torch.nn.Module  # the CLIP image encoder
    features: Any  # its image processor

    @torch.no_grad()
    def embeddings(
        self, references: Mapping[str, Sequence[Image]], count: int, guided: bool, device: torch.device
    ) -> list[torch.Tensor]:
        """Each adapter's image embeddings for `count` candidates (negatives first, if `guided`), as the
        pipelines' `ip_adapter_image_embeds` take them. Several images of one kind are averaged into one
        embedding: their mix, which is what Blend draws. An adapter without references gets a black
        image's, which its scale of 0 keeps out of the picture."""
        out = []
        for kind, layer in zip(self.kinds, self.projection.image_projection_layers, strict=True):
            images = references.get(kind) or [np.zeros((64, 64, 3), np.uint8)]
            positive, negative = self._encode(images, _uses_hidden_states(layer), device)
            positive, negative = _per_candidate(positive, count), _per_candidate(negative, count)
            out.append(torch.cat([negative, positive]) if guided else positive)
        return out

    def _encode(self, images: Sequence[Image], hidden: bool, device: torch.device) -> tuple[torch.Tensor, ...]:
        """What diffusers' `encode_image` does: the projected embedding, or for the "plus" adapters the
        penultimate hidden states; the negative is zeros, or a blank image's hidden states."""
        dtype = next(self.encoder.parameters()).dtype
        pixels = self.features(list(images), return_tensors="pt").pixel_values.to(device, dtype)
        if not hidden:
            embeds = self.encoder(pixels).image_embeds
            return embeds, torch.zeros_like(embeds)
        states = self.encoder(pixels, output_hidden_states=True).hidden_states[-2]
        blank = self.encoder(torch.zeros_like(pixels[:1]), output_hidden_states=True).hidden_states[-2]
        return states, blank

    @contextmanager
    def steering(self, unet: torch.nn.Module, scales: Mapping[str, float]) -> Iterator[None]:
        """The adapters on in `unet` for one call, each at its kind's scale (0 for kinds not given), run
        eagerly: a compiled UNet's graph holds the plain processors."""
        for processor in self.steered.values():
            if hasattr(processor, "to_k_ip"):
                processor.scale = [scales.get(kind, 0.0) for kind in self.kinds]
        unet.set_attn_processor(dict(self.steered))
        unet.encoder_hid_proj = self.projection
        unet.config.encoder_hid_dim_type = "ip_image_proj"
        try:
            with eager():
                yield
        finally:
            self._switch_off(unet)

    def _switch_off(self, unet: torch.nn.Module) -> None:
        unet.set_attn_processor(dict(self.plain))
        unet.encoder_hid_proj = None
        unet.config.encoder_hid_dim_type = None


def load_adapters(profile: Profile, pipe: Any, offline: bool) -> Adapters | None:
    """The profile's IP-Adapters loaded into `pipe`'s UNet (shared with the pipelines built from it),
    switched off; None if it has none. Raises what diffusers raises for a missing or wrong file."""
    sources = profile.adapters
    if not sources:
        return None
    unet = pipe.unet
    if unet.encoder_hid_proj is not None:  # a UNet with its own text projection (Kolors) is not handled
        raise ValueError("its UNet already has an encoder_hid_proj")
    plain = dict(unet.attn_processors)
    models = [source.model for source in sources.values()]
    pipe.load_ip_adapter(
        [str(Path(model).expanduser()) if Path(model).expanduser().exists() else model for model in models],
        subfolder=[source.subfolder for source in sources.values()],
        weight_name=[source.weight_name for source in sources.values()],
        image_encoder_folder=next(iter(sources.values())).image_encoder,
        local_files_only=offline or all(Path(model).expanduser().exists() for model in models),
    )
    adapters = Adapters(
        kinds=tuple(sources),
        steered=dict(unet.attn_processors),
        plain=plain,
        projection=unet.encoder_hid_proj,
        encoder=pipe.image_encoder,
        features=pipe.feature_extractor,
    )
    adapters._switch_off(unet)
    return adapters


def _uses_hidden_states(layer: torch.nn.Module) -> bool:
    """As diffusers decides: the plain adapter's projection takes the pooled embedding; the others
    (plus, face) the encoder's hidden states."""
    from diffusers.models.embeddings import ImageProjection

    return not isinstance(layer, ImageProjection)


def _per_candidate(embeds: torch.Tensor, count: int) -> torch.Tensor:
    """Images' embeddings (images first) averaged into one, repeated for `count` candidates:
    (count, 1, ...), one image per candidate as the UNet's image projection reads them."""
    mixed = embeds.mean(dim=0)[None, None]
    return mixed.repeat(count, *([1] * (mixed.ndim - 1)))
