"""Speed-ups applied once to a loaded model's modules, before its pipelines are built.

Each lever is one of `LEVERS`, chosen with `JOURNEYD_SPEEDUPS` (comma-separated, or `auto`/`none`):

* `channels_last`: the denoiser and VAE in NHWC, the layout cuDNN's fast convolutions use (FLUX's
  transformer has no convolutions; its VAE still gains);
* `fused_qkv`: one GEMM for q, k and v (k and v in cross-attention) instead of three;
* `compile`: regional `torch.compile` of the denoiser's repeated blocks (diffusers'
  `compile_repeated_blocks`), so one compiled block serves all its copies and compiling takes
  seconds, not minutes;
* `cuda_graphs`: the whole denoiser compiled with CUDA graphs (`mode="reduce-overhead"`), which
  removes per-kernel launch cost; it replaces `compile` when both are asked for;
* `compile_vae`: the VAE's decoder compiled whole (GroupNorm + SiLU fused), which every action runs
  on every image; it matters most for few-step models, where decoding is a large share of a call;
* `fp8`: the linear layers of the repeated blocks in float8 with row-wise scales (fp8.py), on GPUs
  of compute capability 8.9 or newer; it changes the pictures a little (float8 rounding);
* `cache`: DeepCache on a UNet (step_cache.py): two steps in three run only the UNet's outermost
  blocks, on features kept from the step before; it changes the pictures, and calls of few steps
  run whole. It cannot go with `cuda_graphs`, whose one graph is the whole UNet.

With a compiling lever, `DiffusionEngine.load` warms each model up at its default size.

`auto` is what has no start-up cost and no risk on the device at hand: on CUDA, `channels_last`
and `fused_qkv`; elsewhere nothing. Compiling stays opt-in until the GPU benchmark shows what it
buys (see bench/NOTES.md). A lever the model cannot take (fused QKV on a UNet with added KV
projections) fails at start-up, naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from journeyd.engines.diffusion.fp8 import fp8_supported, quantize_blocks
from journeyd.engines.diffusion.step_cache import add_step_cache

LEVERS = ("channels_last", "fused_qkv", "compile", "cuda_graphs", "compile_vae", "fp8", "cache")
AUTO_ON_CUDA = frozenset({"channels_last", "fused_qkv"})
COMPILING = frozenset({"compile", "cuda_graphs", "compile_vae"})  # levers whose first call at a shape compiles
CHANGES_PICTURES = frozenset({"fp8", "cache"})  # the others keep the plain model's pictures, to within rounding


class SpeedupError(ValueError):
    """A speed-up setting (JOURNEYD_SPEEDUPS, or a profile's own) naming no lever, or levers that clash."""


def parse_speedups(text: str | None, device: torch.device, setting: str = "JOURNEYD_SPEEDUPS") -> frozenset[str]:
    """The levers a setting (named in errors) asks for on `device`: `auto` (the default), `none`, or a
    comma list (which may include `auto`, e.g. `auto,compile`)."""
    chosen: set[str] = set()
    for word in (text or "auto").replace(" ", "").lower().split(","):
        if word == "auto":
            chosen |= AUTO_ON_CUDA if device.type == "cuda" else set()
        elif word in LEVERS:
            chosen.add(word)
        elif word not in ("none", ""):
            raise SpeedupError(f"{setting}: {word!r} is not one of auto, none, {', '.join(LEVERS)}")
    if "fp8" in chosen and (why := fp8_supported(device)):
        raise SpeedupError(f"{setting}: {why}, not {device}")
    if {"cache", "cuda_graphs"} <= chosen:
        raise SpeedupError(f"{setting}: cache skips parts of the UNet, which cuda_graphs captures whole: use one")
    return frozenset(chosen)


def denoiser(pipe: Any) -> torch.nn.Module:
    """The UNet, or FLUX's transformer."""
    return pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer


def apply_speedups(pipe: Any, levers: frozenset[str]) -> Any:
    """Pull `levers` on the denoiser and VAE of `pipe` (in place; the pipelines built from it share them)."""
    vae = pipe.vae
    if "fused_qkv" in levers:
        vae.fuse_qkv_projections()
    if "channels_last" in levers:
        vae.to(memory_format=torch.channels_last)
    if "compile_vae" in levers:
        vae.decoder.compile(fullgraph=True)
    speed_up_denoiser(denoiser(pipe), levers)
    return pipe


def speed_up_denoiser(net: torch.nn.Module, levers: frozenset[str]) -> None:
    """Pull `levers` on a UNet or FLUX transformer (also a dedicated inpainting model's, alone)."""
    if "fused_qkv" in levers:
        net.fuse_qkv_projections()
    if "channels_last" in levers:
        net.to(memory_format=torch.channels_last)
    if "cache" in levers:
        add_step_cache(net)
    if "fp8" in levers and not quantize_blocks(net):
        raise ValueError(f"fp8: {type(net).__name__} has no repeated blocks with linear layers to put in float8")
    if "cuda_graphs" in levers:
        net.compile(mode="reduce-overhead", fullgraph=True)
    elif "compile" in levers:
        net.compile_repeated_blocks(fullgraph=True)


@contextmanager
def eager() -> Iterator[None]:
    """Run compiled modules eagerly for one call: for calls that change the modules themselves
    (--tile switches convolutions to circular padding), which a compiled graph would not see."""
    with torch.compiler.set_stance("force_eager"):
        yield
