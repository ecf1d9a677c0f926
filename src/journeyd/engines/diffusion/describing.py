"""Describe: four prompts for an image, from a captioning model's sentence and the image's own looks.

The captioner is a BLIP model (transformers' `BlipForConditionalGeneration` and `BlipProcessor`), named
by a profile's `captioner` (hub id or folder) and loaded on the first describe: most servers never
describe, and it costs memory. Captions are sampled with the task's seed, so Retry (a new seed) reads
the image again and may say something else.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from journeyd.engines.base import Image
from journeyd.engines.diffusion.looks import Looks

CAPTION_TOKENS = 30
FALLBACK_CAPTION = "a picture"  # what a model that said nothing (after special tokens) is taken to have said
KEY_WORDS = 4  # the shortened prompt keeps this many of the caption's content words
# BLIP's well-known artefacts ("arafed" and kin come from its training captions), and words that carry nothing
ARTEFACTS = re.compile(r"\b(ara+f+e*d?|araffe|arafly)\b\s*", re.IGNORECASE)
STOP_WORDS = frozenset(
    {"a", "an", "the", "of", "on", "in", "at", "with", "and", "or", "to", "is", "are", "there", "this", "that"}
    | {"it", "its", "by", "for", "from", "over", "under", "near", "some"}
)


class Captioner:
    """A loaded BLIP model with its processor, on one device."""

    def __init__(self, model: Any, processor: Any) -> None:
        self.model = model.eval()
        self.processor = processor

    @classmethod
    def load(cls, source: str, device: torch.device, dtype: torch.dtype, offline: bool) -> Captioner:
        """From a hub id (through the cache; only it when `offline`) or a folder; raises what
        transformers raises for a missing or broken model."""
        from transformers import BlipForConditionalGeneration, BlipProcessor

        path = Path(source).expanduser()
        where, local = (str(path), True) if path.exists() else (source, offline)
        processor = BlipProcessor.from_pretrained(where, local_files_only=local)
        model = BlipForConditionalGeneration.from_pretrained(where, dtype=dtype, local_files_only=local)
        return cls(model.to(device), processor)

    @torch.no_grad()
    def caption(self, image: Image, seed: int) -> str:
        from PIL import Image as PILImage

        device = self.model.device
        inputs = self.processor(images=PILImage.fromarray(image), return_tensors="pt")
        pixels = inputs["pixel_values"].to(device, self.model.dtype)
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # the seed decides this sampling, and nothing else's
            torch.manual_seed(int(seed))
            ids = self.model.generate(
                pixel_values=pixels, do_sample=True, top_k=50, top_p=0.9, max_new_tokens=CAPTION_TOKENS
            )
        text = ARTEFACTS.sub("", self.processor.decode(ids[0], skip_special_tokens=True))
        return " ".join(text.split()) or FALLBACK_CAPTION


def described_prompts(caption: str, looks: Looks) -> list[str]:
    """Describe's four prompts, all different: the caption; with the palette; with the light and
    composition; and shortened to its content words."""
    caption = caption.strip().rstrip(".") or FALLBACK_CAPTION
    styled = f"{caption}, {looks.palette}, {looks.colour}"
    lit = f"{caption}, {looks.light}, {looks.composition}"
    words = [word for word in re.findall(r"[\w'-]+", caption.lower()) if word not in STOP_WORDS]
    short = ", ".join(dict.fromkeys(words[:KEY_WORDS])) or caption
    for extra in ("", looks.palette, looks.composition, looks.light):  # a one-word caption is its own short form
        candidate = f"{short}, {extra}" if extra else short
        if candidate not in (caption, styled, lit):
            return [caption, styled, lit, candidate]
    raise AssertionError("unreachable: the palette, light and composition words always differ")
