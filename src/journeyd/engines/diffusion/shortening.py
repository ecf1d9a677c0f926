"""Shorten: which phrases of a prompt matter to the model, measured with its own text encoders.

A phrase's weight is how far the prompt's embedding moves when the phrase is left out (cosine
distance, by ablation), scaled so the weightiest is 1. The embedding is what conditions the picture:
the pooled CLIP embedding (SD 1.5, SDXL's two encoders, FLUX's CLIP) and, for FLUX, the mean of its T5
tokens. The five shorter prompts keep the weightiest phrases.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from journeyd.domain.prompt import PromptSpec
from journeyd.engines.base import Shortened
from journeyd.engines.diffusion.phrases import check_shortenable

OPTIONS = 5


def shorten(pipe: Any, prompt: PromptSpec) -> Shortened:
    phrases = check_shortenable(prompt.text)
    texts = [_join(phrases)] + [_join(phrases[:i] + phrases[i + 1 :]) for i in range(len(phrases))]
    vectors = _embed(pipe, texts)
    distances = 1.0 - vectors[1:] @ vectors[0]
    distances = np.maximum(distances, 0.0)
    top = float(distances.max())
    weights = distances / top if top > 0 else np.ones(len(phrases))
    ranked = sorted(range(len(phrases)), key=lambda i: (-weights[i], i))
    # three different phrases make six different proper subsets, so there are always five
    prompts = list(itertools.islice(dict.fromkeys(_join([phrases[i] for i in c]) for c in _choices(ranked)), OPTIONS))
    return Shortened(
        weights=[(phrase, round(float(weight), 3)) for phrase, weight in zip(phrases, weights, strict=True)],
        prompts=prompts,
    )


def _choices(ranked: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Proper subsets of the phrases, each listed weightiest first: the weightiest k for five lengths k
    spread over 1..n-1, longest first; then (for short prompts, which have fewer lengths) the other
    subsets, longest first, by their phrases' ranks."""
    count = len(ranked)
    lengths = sorted({round(k) for k in np.linspace(1, count - 1, OPTIONS)}, reverse=True)
    yield from (tuple(ranked[:k]) for k in lengths)
    for size in range(count - 1, 0, -1):
        yield from itertools.combinations(ranked, size)


def _join(phrases: Sequence[str]) -> str:
    return ", ".join(phrases) if any(" " in phrase for phrase in phrases) else " ".join(phrases)


@torch.no_grad()
def _embed(pipe: Any, texts: list[str]) -> np.ndarray:
    """One unit vector per text: its pooled CLIP embedding from each CLIP encoder and its mean T5
    token, each normalised, concatenated, normalised."""
    parts = []
    for tokenizer_name, encoder_name in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
        tokenizer, encoder = getattr(pipe, tokenizer_name, None), getattr(pipe, encoder_name, None)
        if tokenizer is None or encoder is None:
            continue
        tokens = tokenizer(
            texts, padding="max_length", max_length=min(tokenizer.model_max_length, 77), truncation=True,
            return_tensors="pt",
        )  # fmt: skip
        ids, mask = tokens.input_ids.to(encoder.device), tokens.attention_mask.to(encoder.device)
        if "T5" in type(encoder).__name__:
            hidden = encoder(ids, attention_mask=mask).last_hidden_state.float()
            vector = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        else:
            out = encoder(ids)
            vector = (out.text_embeds if getattr(out, "text_embeds", None) is not None else out.pooler_output).float()
        parts.append(torch.nn.functional.normalize(vector, dim=-1))
    joined = torch.nn.functional.normalize(torch.cat(parts, dim=-1), dim=-1)
    return joined.cpu().numpy().astype(np.float64)
