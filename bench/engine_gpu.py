"""Engine benchmark: journeyd's diffusers engine against the plain diffusers pipelines, on one GPU.

Full-size SDXL (1024²) and SD 1.5 (512²) are built in memory with random weights: a random model
does exactly the FLOPs of the real one, so no checkpoint is downloaded. Measured in one run, on one
machine, for each family and step count (default 30 and 4):

  * Imagine (a grid of 4): journeyd's `render` (canvas_size + DiffusionEngine.generate) against
    `pipe(prompt, num_images_per_prompt=4, num_inference_steps=N, height, width)`;
  * Vary (Region): `render` with a Region task (dilate, crop around the mask, pre-fill, inpaint,
    paste back, colour-match and composite) against the plain inpaint pipeline on the whole
    image + mask at the model size;
  * Zoom Out 2x: `render` with a Zoom task (2x canvas, outpaint, composite at 2x) against the plain
    inpaint pipeline on the zoomed-out canvas resized to the model size.
  * Two Imagine tasks queued back to back (lever 7, batching): `render_batch`, the one call the
    worker makes for them with JOURNEYD_BATCH_TASKS >= 2, against two plain pipeline calls.
  * Upscale (Subtle) 2x (row 10 of NOTES.md): `render` with an Upscale task (Lanczos to 2x, then
    img2img over overlapping model-size tiles, 4 tiles a call, blended) against the same tiles drawn
    by the plain img2img pipeline one call each (same strength and steps), averaged where they overlap.

Each is reported as latency (median of timed runs after a warm-up; torch.cuda.synchronize() around
each), images/min, speed-up over diffusers, and the UNet's achieved TFLOP/s against a bf16 matmul
peak measured on the same card in the same run. UNet FLOPs are counted with FlopCounterMode on one
forward at the shape each side really used (captured from its first UNet call; CFG doubles the
batch), on a meta-device copy of the UNet (no compute), per image in the batch, times the images all
its calls ran (an Upscale's last call has fewer tiles; calls the `cache` lever skips are counted at
their own, smaller, FLOPs, so TFLOP/s stays work done). UNet time
comes from CUDA events in forward hooks, in one extra (untimed) run per side.

Both sides use the same dtype (journeyd's `pick_device`: bf16 on a GPU) and default SDPA attention:
the baseline is eager diffusers, and journeyd's side is what `load_model` makes of a loaded pipeline
(`apply_speedups` with the levers of `--speedups`, default `auto` as `journeyd serve` does, then
`share_weights` + `DiffusionEngine(models)`); optimisations belong in the engine, not here. Several
lever sets can be measured in one run (`--speedups "none;auto;auto,compile"`): each is one more
journeyd side, `journeyd` being the first and `journeyd[<levers>]` the others, all against the same
baseline. Every side gets its own copy of the weights, so nothing one does to its modules reaches
another. Step counts up to --distilled-max-steps (default 8) run as a distilled model does
(SDXL-Lightning/Turbo: guidance 0, so no CFG, and trailing Euler), on both sides; longer ones run
with CFG at guidance 7. The weights' dtype each side's UNet really ran in is recorded, and any
that is not the intended one is listed under `dtype_problems` (and printed): diffusers' `from_pipe`
casts shared modules to float32 unless told the dtype (see bench/NOTES.md).

Without CUDA it runs the same code on the CPU with tiny models (tests/tiny_models.py configs, built
in memory) at 64², 4 and 2 steps: a correctness check, not a performance number. The full-size
architectures are still checked on the meta device (parameter counts, FLOPs per image) without
allocating them. Results go to bench/results/engine_gpu-<time>.json.

    python bench/engine_gpu.py                      # both families, 30 and 4 steps
    python bench/engine_gpu.py --quick              # one timed run per side, for a smoke test
    python bench/engine_gpu.py --family sdxl --steps 30,4,1
    python bench/engine_gpu.py --configs-only       # just the meta-device architecture check
    python bench/engine_gpu.py --quick --dtype bfloat16   # on a CPU: tiny models, in bf16
    python bench/engine_gpu.py --family sdxl --ops imagine_grid --speedups "none;auto;auto,compile"

On a GPU machine that has torch but no diffusers (and no network), carry wheels along:
`bench/gpu_wheels.sh` downloads into .whl/ what such a machine lacks (diffusers, pydantic-settings
and their needs, at the versions the tests use, for CPython 3.12), and its header has the commands
to install them there with `pip install --no-index --no-deps --target` and run this script.

journeyd itself is imported from src/ (the script adds src/ to the path if journeyd is not
installed); the code it runs needs only torch, numpy, opencv, pillow, pydantic-settings, diffusers
and transformers, not the web stack (fastapi, uvicorn, httpx) nor accelerate.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import cpu_name  # bench/common.py: this script's own folder is on the path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGET_GRID_SPEEDUP = 2.0  # journeyd's Imagine grid vs the plain diffusers call
TARGET_UNET_PEAK_FRACTION = 0.5  # of the bf16 matmul peak measured on the same card, inside the UNet
PROMPT = "a lighthouse on a cliff at dusk, lower newer"
SEED = 1234
IMAGES = 4  # one grid
GUIDANCE = 7.0  # with CFG; distilled step counts run at 0 (no CFG)
ZOOM = 2.0
OPS = ("imagine_grid", "vary_region", "zoom_out_2x", "imagine_2_tasks", "upscale_2x")
OUTPUTS = {"imagine_grid": 4, "vary_region": 4, "zoom_out_2x": 4, "imagine_2_tasks": 8, "upscale_2x": 1}  # images
REGION_SIDE = 0.4  # the Region mask: a centred square this fraction of the image side

# --- architectures -----------------------------------------------------------------------------------
_SDXL_SCHEDULER = {
    "class": "EulerDiscreteScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "prediction_type": "epsilon",
}
_SD15_SCHEDULER = {
    "class": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "set_alpha_to_one": False,
}
_CLIP_L = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}
_SD_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
}

FULL: dict[str, dict[str, Any]] = {
    "sdxl": {
        "size": 1024,
        "unet": {
            "sample_size": 128,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (320, 640, 1280),
            "layers_per_block": 2,
            "transformer_layers_per_block": (1, 2, 10),
            "attention_head_dim": (5, 10, 20),
            "cross_attention_dim": 2048,
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        },
        "vae": {**_SD_VAE, "scaling_factor": 0.13025, "sample_size": 1024, "force_upcast": False},
        "text_encoder": _CLIP_L,
        "text_encoder_2": {  # OpenCLIP ViT-bigG/14's text tower
            "vocab_size": 49408,
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "num_hidden_layers": 32,
            "num_attention_heads": 20,
            "max_position_embeddings": 77,
            "projection_dim": 1280,
            "hidden_act": "gelu",
        },
        "scheduler": _SDXL_SCHEDULER,
    },
    "sd15": {
        "size": 512,
        "unet": {
            "sample_size": 64,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (320, 640, 1280, 1280),
            "layers_per_block": 2,
            "attention_head_dim": 8,
            "cross_attention_dim": 768,
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        },
        "vae": {**_SD_VAE, "scaling_factor": 0.18215, "sample_size": 512},
        "text_encoder": _CLIP_L,
        "scheduler": _SD15_SCHEDULER,
    },
}
# The released checkpoints' parameter counts (stabilityai/stable-diffusion-xl-base-1.0,
# stable-diffusion-v1-5): the random architectures above must match them.
EXPECTED_PARAMS = {
    "sdxl": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
}

_TINY_CLIP = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 5,
    "vocab_size": 1000,
    "max_position_embeddings": 77,
    "layer_norm_eps": 1e-05,
}
_TINY_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (32, 64),
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
    "latent_channels": 4,
}
_TINY_UNET: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
}
TINY: dict[str, dict[str, Any]] = {  # tests/tiny_models.py's configs; vae_scale_factor 2
    "sdxl": {
        "size": 64,
        "unet": {
            **_TINY_UNET,
            "attention_head_dim": (2, 4),
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "transformer_layers_per_block": (1, 2),
            "projection_class_embeddings_input_dim": 6 * 8 + 32,
            "cross_attention_dim": 32 + 48,
        },
        "vae": {**_TINY_VAE, "sample_size": 128},
        "text_encoder": {**_TINY_CLIP, "hidden_act": "gelu", "projection_dim": 32},
        "text_encoder_2": {
            **_TINY_CLIP,
            "hidden_size": 48,
            "num_hidden_layers": 10,
            "hidden_act": "gelu",
            "projection_dim": 32,
        },
        "scheduler": _SDXL_SCHEDULER,
    },
    "sd15": {
        "size": 64,
        "unet": {
            **_TINY_UNET,
            "cross_attention_dim": 32,
        },
        "vae": _TINY_VAE,
        "text_encoder": _TINY_CLIP,
        "scheduler": _SD15_SCHEDULER,
    },
}

# transformers' CLIP tokenizer test vocabulary (as in tests/tiny_models.py): no hub tokenizer is fetched.
# Prompts are padded to 77 tokens whatever the vocabulary, so the text encoders do the real work.
_VOCAB = [
    "l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo", "l</w>", "w</w>", "r</w>", "t</w>", "low</w>",
    "er</w>", "lowest</w>", "newer</w>", "wider", "<unk>", "<|startoftext|>", "<|endoftext|>",
]  # fmt: skip
_MERGES = ["#version: 0.2", "l o", "lo w</w>", "e r</w>"]


def _tokenizer(directory: Path) -> Any:
    from transformers import CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(_VOCAB)}))
    (directory / "merges.txt").write_text("\n".join(_MERGES) + "\n")
    return CLIPTokenizer.from_pretrained(directory, model_max_length=77, unk_token="<unk>", local_files_only=True)


def _components(spec: dict[str, Any], tokenizer: Any | None = None) -> dict[str, torch.nn.Module]:
    """The UNet, VAE and text encoder(s) of `spec`, randomly initialised on the current default device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    ids = {}
    if tokenizer is not None:
        ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
        ids["pad_token_id"] = tokenizer.pad_token_id
    parts: dict[str, torch.nn.Module] = {
        "unet": UNet2DConditionModel(**spec["unet"]),
        "vae": AutoencoderKL(**spec["vae"]),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**spec["text_encoder"], **ids)),
    }
    if "text_encoder_2" in spec:
        parts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**spec["text_encoder_2"], **ids))
    return parts


def _scheduler(config: dict[str, Any]) -> Any:
    import diffusers

    kind = dict(config)
    return getattr(diffusers, kind.pop("class"))(**kind)


def build_pipeline(family: str, spec: dict[str, Any], device: torch.device, dtype: torch.dtype, tokenizer: Any) -> Any:
    """A txt2img pipeline with random weights (seeded: two builds hold the same weights)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    torch.manual_seed(SEED)
    try:  # straight onto the device: no host copy of the fp32 weights
        with torch.device(device):
            parts = _components(spec, tokenizer)
    except Exception as error:  # a constructor that does not follow the default device: build, then move
        print(f"building under torch.device({device.type!r}) failed ({error!r}); building on the CPU and moving")
        torch.manual_seed(SEED)
        parts = {name: module.to(device) for name, module in _components(spec, tokenizer).items()}
    for module in parts.values():
        module.to(dtype).eval()  # as from_pretrained leaves them
    scheduler = _scheduler(spec["scheduler"])
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(
            **parts, tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler=scheduler, add_watermarker=False
        )
    else:
        pipe = StableDiffusionPipeline(
            **parts,
            tokenizer=tokenizer,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- FLOPs -----------------------------------------------------------------------------------------------
def _to_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return torch.empty(value.shape, dtype=value.dtype, device="meta")
    if isinstance(value, dict):
        return {key: _to_meta(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_meta(item) for item in value)
    return value


def _count_flops(module: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*_to_meta(args), **_to_meta(kwargs))
    return int(counter.get_total_flops())


def _skipped_call_flops(meta_unet: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> int:
    """FLOPs of a UNet call the step cache skips (its outermost blocks only): on the meta copy, a
    whole call keeps its features, then one skipped call is counted."""
    from journeyd.engines.diffusion.step_cache import MIN_STEPS, add_step_cache

    if getattr(meta_unet, "step_cache", None) is None:
        add_step_cache(meta_unet)
    with meta_unet.step_cache.active(MIN_STEPS), torch.no_grad():
        meta_unet(*_to_meta(args), **_to_meta(kwargs))
        return _count_flops(meta_unet, *args, **kwargs)


def _meta_unet(config: Any, dtype: torch.dtype) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel.from_config(config).to(dtype).eval()


def check_architectures(families: list[str]) -> dict[str, Any]:
    """Build each full-size architecture on the meta device (no memory): parameter counts against the
    released checkpoints, and FLOPs per image at the native size, for the record and for NOTES.md."""
    out: dict[str, Any] = {}
    for family in families:
        spec = FULL[family]
        with torch.device("meta"):
            parts = _components(spec)
        params = {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
        expected = EXPECTED_PARAMS[family]
        side, unet, vae = spec["size"], parts["unet"], parts["vae"]
        latent = side // 8
        kwargs: dict[str, Any] = {"encoder_hidden_states": torch.empty(1, 77, unet.config.cross_attention_dim)}
        if family == "sdxl":
            kwargs["added_cond_kwargs"] = {"text_embeds": torch.empty(1, 1280), "time_ids": torch.empty(1, 6)}
        unet_flops = _count_flops(unet, torch.empty(1, 4, latent, latent), torch.tensor(999.0), **kwargs)
        decode = _count_flops(vae.decode, torch.empty(1, 4, latent, latent))
        encode = _count_flops(vae.encode, torch.empty(1, 3, side, side))
        text = sum(
            _count_flops(parts[name], torch.zeros(1, 77, dtype=torch.long))
            for name in ("text_encoder", "text_encoder_2")
            if name in parts
        )
        grid_30 = 30 * 2 * IMAGES * unet_flops
        out[family] = {
            "size": [side, side],
            "params": params,
            "params_expected": expected,
            "params_match": all(params[name] == expected[name] for name in expected),
            "unet_gflop_per_image_step_no_cfg": unet_flops / 1e9,
            "vae_decode_gflop_per_image": decode / 1e9,
            "vae_encode_gflop_per_image": encode / 1e9,
            "text_encoders_gflop_per_prompt": text / 1e9,
            "grid_30_steps_cfg_unet_tflop": grid_30 / 1e12,
            "grid_30_steps_cfg_unet_share_of_flops": grid_30 / (grid_30 + IMAGES * decode + 2 * text),
        }
        del parts
    return out


# --- peak and timing ----------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, quick: bool) -> dict[str, Any]:
    """The best dense matmul rate this device reaches in `dtype`, over a few square sizes."""
    sizes = (4096, 8192, 16384) if device.type == "cuda" else (512, 1024)
    best: dict[str, Any] = {"dtype": str(dtype).removeprefix("torch."), "tflops": 0.0}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        flops = 2 * n**3
        iters = max(3, min(200, int((4e13 if device.type == "cuda" else 2e10) / flops)))
        if quick:
            iters = max(3, iters // 4)
        for _ in range(3):
            torch.matmul(a, b)
        for _ in range(2 if quick else 3):  # best of a few rounds
            _sync(device)
            start = time.perf_counter()
            for _ in range(iters):
                torch.matmul(a, b)
            _sync(device)
            rate = flops * iters / (time.perf_counter() - start) / 1e12
            if rate > best["tflops"]:
                best = {**best, "tflops": rate, "n": n, "iters": iters}
        del a, b
    return best


class UNetProbe:
    """Counts UNet calls (and those the step cache skipped), keeps the first call's inputs, and times
    each call (CUDA events on a GPU)."""

    def __init__(self, unet: torch.nn.Module, device: torch.device) -> None:
        self.unet, self.device = unet, device
        self.calls = self.skipped = 0
        self.images = {False: 0, True: 0}  # UNet batch rows run, by whether the step cache skipped the call
        self.first: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self.spans: list[tuple[Any, Any]] = []
        self._open: Any = None
        self._handles: list[Any] = []

    def _mark(self) -> Any:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _before(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.calls += 1
        cache = getattr(module, "step_cache", None)  # its pre-hook ran first: it has decided this call
        skipped = bool(cache is not None and cache.skipping)
        self.skipped += skipped
        self.images[skipped] += int((args[0] if args else kwargs["sample"]).shape[0])
        if self.first is None:
            self.first = (args, dict(kwargs))
        self._open = self._mark()

    def _after(self, module: Any, args: Any, kwargs: Any, output: Any) -> None:
        self.spans.append((self._open, self._mark()))

    @contextlib.contextmanager
    def watching(self) -> Iterator[UNetProbe]:
        self._handles = [
            self.unet.register_forward_pre_hook(self._before, with_kwargs=True),
            self.unet.register_forward_hook(self._after, with_kwargs=True),
        ]
        try:
            yield self
        finally:
            for handle in self._handles:
                handle.remove()

    def seconds(self) -> float:
        _sync(self.device)
        if self.device.type == "cuda":
            return sum(start.elapsed_time(end) for start, end in self.spans) / 1000
        return sum(end - start for start, end in self.spans)


# --- the two sides ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Setting:
    steps: int
    distilled: bool  # guidance 0 (no CFG) and trailing Euler, as SDXL-Lightning / Turbo run

    @property
    def guidance(self) -> float:
        return 0.0 if self.distilled else GUIDANCE

    @property
    def scheduler(self) -> str:
        return "euler_trailing" if self.distilled else "default"


def _picture(side: int) -> np.ndarray:
    """A deterministic, smooth test picture with some grain: what Region and Zoom start from."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    rgb = np.stack([0.5 + 0.4 * np.sin(6 * x + 2 * y), 0.5 + 0.4 * np.cos(3 * y - x), 0.3 + 0.5 * x * y], -1)
    grain = np.random.default_rng(SEED).normal(0, 0.03, rgb.shape)
    return (np.clip(rgb + grain, 0, 1) * 255).astype(np.uint8)


def _region_mask(side: int) -> np.ndarray:
    mask = np.zeros((side, side), dtype=bool)
    half = round(side * REGION_SIDE / 2)
    mask[side // 2 - half : side // 2 + half, side // 2 - half : side // 2 + half] = True
    return mask


class Journeyd:
    """journeyd's side: one DiffusionEngine per family, one profile per step count (chosen by --v),
    all over one set of weights, sped up and handed over with `share_weights`, as `load_model` does."""

    def __init__(self, family: str, pipe: Any, side: int, settings: list[Setting], levers: frozenset[str]) -> None:
        from journeyd.config import Settings
        from journeyd.engines.diffusion import DiffusionEngine, Profile, share_weights
        from journeyd.engines.diffusion.speedups import apply_speedups

        profiles = [
            Profile(
                name=f"bench-{family}-{s.steps}",
                model=f"random-weights:{family}",
                family=family,
                versions=(str(s.steps),),
                steps=s.steps,
                guidance=s.guidance,
                size=side,
                scheduler=s.scheduler,
            )
            for s in settings
        ]
        first = share_weights(profiles[0], apply_speedups(pipe, levers))
        models = [first] + [dataclasses.replace(first, profile=profile) for profile in profiles[1:]]
        self.engine = DiffusionEngine(models)
        self.max_output_pixels = Settings.model_fields["max_output_pixels"].default  # the server's default

    @property
    def unet(self) -> torch.nn.Module:
        """The UNet the engine calls now (read each time: an engine may wrap it after loading)."""
        return self.engine.models[0].txt2img.unet

    def call(self, op: str, setting: Setting, source: np.ndarray, mask: np.ndarray) -> list[Any]:
        from journeyd.domain.lifecycle import Action, Op, Speed, Status
        from journeyd.domain.prompt import PromptSpec
        from journeyd.domain.task import Task
        from journeyd.render import Inputs, render, render_batch

        action, task_op, args, inputs = {
            "imagine_grid": (Action.IMAGINE, Op.GENERATE, {}, Inputs()),
            "imagine_2_tasks": (Action.IMAGINE, Op.GENERATE, {}, Inputs()),
            "vary_region": (Action.INPAINT, Op.VARY_REGION, {}, Inputs(source=source, mask=mask)),
            "zoom_out_2x": (Action.ZOOM, Op.ZOOM_OUT, {"zoom": ZOOM}, Inputs(source=source)),
            "upscale_2x": (Action.UPSCALE, Op.UPSCALE_SUBTLE, {}, Inputs(source=source)),
        }[op]
        task = Task(
            id="bench",
            owner=None,
            action=action,
            op=task_op,
            status=Status.IN_PROGRESS,
            prompt=PROMPT,
            spec=PromptSpec(text=PROMPT, version=str(setting.steps)),
            speed=Speed.FAST,
            seed=SEED,
            price_name="bench",
            created_at=0,
            updated_at=0,
            args=args,
        )
        if op == "imagine_2_tasks":  # two queued tasks in one call, as the worker batches them
            other = dataclasses.replace(task, id="bench-2", seed=SEED + IMAGES)
            return [i for r in render_batch([task, other], self.engine, [_quiet, _quiet]) for i in r.images]
        return render(task, inputs, self.engine, _quiet, max_output_pixels=self.max_output_pixels).images


class Diffusers:
    """The baseline: the plain diffusers pipelines, eager, on their own copy of the weights."""

    def __init__(self, family: str, pipe: Any, side: int, settings: list[Setting]) -> None:
        import cv2
        import diffusers
        from PIL import Image as PILImage

        from journeyd.imaging.canvas import zoom_canvas

        self.pipe, self.side = pipe, side
        classes = {
            "txt2img": type(pipe),
            "img2img": diffusers.StableDiffusionXLImg2ImgPipeline
            if family == "sdxl"
            else diffusers.StableDiffusionImg2ImgPipeline,
            "inpaint": diffusers.StableDiffusionXLInpaintPipeline
            if family == "sdxl"
            else diffusers.StableDiffusionInpaintPipeline,
        }
        source, mask = _picture(side), _region_mask(side)
        self.big = cv2.resize(source, (2 * side, 2 * side), interpolation=cv2.INTER_LANCZOS4)  # Upscale's start
        canvas = zoom_canvas(source, ZOOM)
        self.inputs = {
            "vary_region": (PILImage.fromarray(source), PILImage.fromarray(mask.astype(np.uint8) * 255)),
            "zoom_out_2x": (
                PILImage.fromarray(cv2.resize(canvas.image, (side, side), interpolation=cv2.INTER_AREA)),
                PILImage.fromarray(
                    cv2.resize(canvas.mask.astype(np.uint8) * 255, (side, side), interpolation=cv2.INTER_NEAREST)
                ),
            ),
        }
        self.unet = pipe.unet
        self._pipes: dict[tuple[str, bool], Any] = {}  # (kind, distilled): built once, reused as users do
        for distilled in {setting.distilled for setting in settings}:
            base = pipe.scheduler
            for kind, cls in classes.items():
                scheduler = (
                    diffusers.EulerDiscreteScheduler.from_config(base.config, timestep_spacing="trailing")
                    if distilled
                    else type(base).from_config(base.config)
                )
                # from_pipe casts every shared module to float32 unless given a dtype (diffusers 0.42)
                self._pipes[kind, distilled] = cls.from_pipe(pipe, scheduler=scheduler, dtype=pipe.dtype)
                self._pipes[kind, distilled].set_progress_bar_config(disable=True)

    def _pipe(self, kind: str, setting: Setting) -> Any:
        return self._pipes[kind, setting.distilled]

    def _upscale(self, setting: Setting) -> np.ndarray:
        """Tiled img2img by hand: the 2x picture in model-size tiles overlapping by an eighth, one call
        each, at Upscale (Subtle)'s strength and the same steps run, averaged where they overlap."""
        from PIL import Image as PILImage

        from journeyd.engines.diffusion.engine import UPSCALE_STRENGTH

        strength, length, tile = UPSCALE_STRENGTH["subtle"], 2 * self.side, self.side
        count = math.ceil((length - tile // 8) / (tile - tile // 8))
        starts = [round(i * (length - tile) / (count - 1)) for i in range(count)]
        total, weight = np.zeros((length, length, 3)), np.zeros((length, length, 1))
        for y in starts:
            for x in starts:
                crop = PILImage.fromarray(self.big[y : y + tile, x : x + tile])
                drawn = self._pipe("img2img", setting)(
                    PROMPT,
                    image=crop,
                    strength=strength,
                    num_inference_steps=math.ceil(setting.steps / strength),
                    guidance_scale=setting.guidance,
                    output_type="np",
                ).images[0]
                total[y : y + tile, x : x + tile] += drawn
                weight[y : y + tile, x : x + tile] += 1
        return total / weight

    def call(self, op: str, setting: Setting, source: np.ndarray, mask: np.ndarray) -> list[Any]:
        common = {
            "num_images_per_prompt": IMAGES,
            "num_inference_steps": setting.steps,
            "guidance_scale": setting.guidance,
            "height": self.side,
            "width": self.side,
        }
        if op == "imagine_grid":
            return self._pipe("txt2img", setting)(PROMPT, **common).images
        if op == "imagine_2_tasks":  # two tasks, one call each, as a server without batching runs them
            return [i for _ in range(2) for i in self._pipe("txt2img", setting)(PROMPT, **common).images]
        if op == "upscale_2x":
            return [self._upscale(setting)]
        image, mask_image = self.inputs[op]
        return self._pipe("inpaint", setting)(PROMPT, image=image, mask_image=mask_image, strength=1.0, **common).images


def _quiet(done: int, total: int, preview: object = None) -> None:
    pass


def _size_of(image: Any) -> str:
    width, height = (image.shape[1], image.shape[0]) if isinstance(image, np.ndarray) else image.size
    return f"{width}x{height}"


# --- one case -------------------------------------------------------------------------------------------------
def run_case(
    family: str,
    op: str,
    setting: Setting,
    sides: dict[str, Any],
    meta_unet: torch.nn.Module,
    device: torch.device,
    warmup: int,
    reps: int,
) -> dict[str, Any]:
    side_px, scale = sides["diffusers"].side, sides["diffusers"].pipe.vae_scale_factor
    source, mask = _picture(side_px), _region_mask(side_px)

    def once(name: str) -> list[Any]:
        # Random weights can overflow bf16 (NaNs cast to uint8 warn); stray progress bars stay unseen.
        with warnings.catch_warnings(), open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore", RuntimeWarning)
            images = sides[name].call(op, setting, source, mask)
        if len(images) != OUTPUTS[op]:
            raise AssertionError(f"{name} {op}: {len(images)} images, not {OUTPUTS[op]}")
        return images

    for _ in range(warmup):
        for name in sides:
            once(name)
    runs: dict[str, list[float]] = {name: [] for name in sides}
    outputs: dict[str, str] = {}
    for _ in range(reps):  # alternate the sides, so a noisy moment (or clocks) favours neither
        for name in sides:
            _sync(device)
            start = time.perf_counter()
            images = once(name)
            _sync(device)
            runs[name].append(time.perf_counter() - start)
            outputs[name] = f"{len(images)} x {_size_of(images[0])}"

    result: dict[str, Any] = {
        "family": family,
        "op": op,
        "steps": setting.steps,
        "cfg": not setting.distilled,
        "guidance": setting.guidance,
        "scheduler": setting.scheduler,
        "model_size": f"{side_px}x{side_px}",
    }
    for name, side in sides.items():  # one more, untimed, run per side with the UNet probe on
        probe = UNetProbe(side.unet, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # hooks on a UNet compiled whole would be traced into its graph: time that one end to end only
        whole_compiled = getattr(side.unet, "_compiled_call_impl", None) is not None
        with contextlib.nullcontext() if whole_compiled else probe.watching():
            _sync(device)
            start = time.perf_counter()
            once(name)
            _sync(device)
            probe_run_s = time.perf_counter() - start
        unet_s = probe.seconds()
        latency = statistics.median(runs[name])
        entry: dict[str, Any] = {
            "latency_s": latency,
            "runs_s": runs[name],
            "images_per_min": OUTPUTS[op] * 60 / latency,
            "output": outputs[name],
            "unet_calls": probe.calls,
            "unet_calls_skipped_by_step_cache": probe.skipped,
            "unet_weights_dtype": str(next(side.unet.parameters()).dtype).removeprefix("torch."),
        }
        if device.type == "cuda":
            entry["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        if probe.first is not None:
            args, kwargs = probe.first
            sample = args[0] if args else kwargs["sample"]
            per_call = _count_flops(meta_unet.to(sample.dtype), *args, **kwargs)
            per_skipped = _skipped_call_flops(meta_unet, args, kwargs) if probe.skipped else 0
            total = (per_call * probe.images[False] + per_skipped * probe.images[True]) / sample.shape[0]
            entry.update(
                {
                    "unet_input": list(sample.shape),
                    "unet_input_dtype": str(sample.dtype).removeprefix("torch."),
                    "resolution": f"{sample.shape[-1] * scale}x{sample.shape[-2] * scale}",
                    "unet_batch": int(sample.shape[0]),
                    "unet_tflop_per_call": per_call / 1e12,
                    "unet_tflop_per_skipped_call": per_skipped / 1e12,
                    "unet_tflop_total": total / 1e12,
                    "unet_s": unet_s,
                    "probe_run_s": probe_run_s,
                    "unet_share_of_probe_run": unet_s / probe_run_s,
                    "unet_tflops": total / unet_s / 1e12 if unet_s > 0 else None,
                    "unet_tflops_end_to_end": total / latency / 1e12,
                }
            )
        else:  # the UNet was not called through the module (wrapped or graphed away): no probe numbers
            entry.update({"unet_s": None, "unet_tflops": None})
        result[name] = entry
    df = result["diffusers"]
    ours = [name for name in sides if name.startswith("journeyd")]
    for name in ours:
        jd = result[name]
        if "unet_tflop_total" not in jd and "unet_tflop_total" in df:  # same model, steps and CFG: same FLOPs
            jd["unet_tflop_total"] = df["unet_tflop_total"]
            jd["unet_tflops_end_to_end"] = df["unet_tflop_total"] / jd["latency_s"]
            jd["unet_flops_assumed_from"] = "diffusers (this side's UNet module was not probed)"
    result["resolution"] = result["journeyd"].get("resolution") or df.get("resolution")
    result["speedup_vs_diffusers"] = df["latency_s"] / result["journeyd"]["latency_s"]
    result["speedups_vs_diffusers"] = {name: df["latency_s"] / result[name]["latency_s"] for name in ours}
    return result


# --- environment -----------------------------------------------------------------------------------------------
def _device_info(device: torch.device) -> dict[str, Any]:
    cpu = cpu_name()
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "gpu": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu: dict[str, Any] = {
            "name": props.name,
            "memory_gib": props.total_memory / 2**30,
            "compute_capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "cuda_runtime": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version,power.limit,clocks.max.sm", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            if smi.returncode == 0 and smi.stdout.strip():
                driver, power, clock = (part.strip() for part in smi.stdout.splitlines()[0].split(","))
                gpu.update({"driver": driver, "power_limit": power, "max_sm_clock": clock})
        info["gpu"] = gpu
    return info


def _versions() -> dict[str, Any]:
    found: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("journeyd", "diffusers", "transformers", "accelerate", "numpy", "opencv-python-headless", "pillow"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def _journeyd_importable() -> None:
    try:
        import journeyd  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT / "src"))


def side_name(index: int, levers: frozenset[str]) -> str:
    """`journeyd` for the first lever set, `journeyd[<levers>]` for the others."""
    return "journeyd" if index == 0 else f"journeyd[{','.join(sorted(levers)) or 'none'}]"


def bench_family(
    family: str,
    spec: dict[str, Any],
    settings: list[Setting],
    lever_sets: list[frozenset[str]],
    ops: list[str],
    device: torch.device,
    dtype: torch.dtype,
    tokenizer: Any,
    warmup: int,
    reps: int,
) -> list[dict[str, Any]]:
    """Every case of one family; its models are freed when this returns."""
    size = spec["size"]
    sides: dict[str, Any] = {
        side_name(i, levers): Journeyd(
            family, build_pipeline(family, spec, device, dtype, tokenizer), size, settings, levers
        )
        for i, levers in enumerate(lever_sets)
    }
    sides["diffusers"] = Diffusers(family, build_pipeline(family, spec, device, dtype, tokenizer), size, settings)
    meta_unet = _meta_unet(sides["diffusers"].unet.config, dtype)
    cases = []
    for setting in settings:
        for op in ops:
            case = run_case(family, op, setting, sides, meta_unet, device, warmup, reps)
            cases.append(case)
            ours = ", ".join(
                f"{name} {case[name]['latency_s']:.3f} s ({ratio:.2f}x)"
                for name, ratio in case["speedups_vs_diffusers"].items()
            )
            print(f"  {family} {op} {setting.steps} steps: diffusers {case['diffusers']['latency_s']:.3f} s; {ours}")
    return cases


def _print_table(cases: list[dict[str, Any]]) -> None:
    columns = ("journeyd s", "diffusers s", "speedup", "img/min", "UNet TF/s", "of peak")
    print(f"{'case':<30} {'side':<40} " + " ".join(f"{c:>11}" for c in columns))
    for case in cases:
        df = case["diffusers"]
        for side, ratio in case["speedups_vs_diffusers"].items():
            jd = case[side]
            name = f"{case['family']} {case['op']} {case['steps']}st"
            tflops = f"{jd['unet_tflops']:.4g}" if jd.get("unet_tflops") else "-"
            frac = f"{jd['unet_peak_fraction']:.1%}" if jd.get("unet_peak_fraction") else "-"
            print(
                f"{name:<30} {side:<40} {jd['latency_s']:>11.3f} {df['latency_s']:>11.3f} {ratio:>10.2f}x "
                f"{jd['images_per_min']:>11.1f} {tflops:>11} {frac:>11}"
            )


# --- main -----------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=("sdxl", "sd15", "both"), default="both")
    parser.add_argument("--steps", help="comma-separated step counts (default 30,4; 4,2 with tiny models)")
    parser.add_argument("--quick", action="store_true", help="one warm-up and one timed run per side, for a smoke test")
    parser.add_argument("--tiny", action="store_true", help="tiny models even on a GPU (always on a CPU)")
    parser.add_argument("--warmup", type=int, help="untimed runs per side before timing (default 1)")
    parser.add_argument("--reps", type=int, help="timed runs per side; the median counts (default 3; 2 on a CPU)")
    parser.add_argument(
        "--distilled-max-steps",
        type=int,
        help="step counts up to this run as a distilled model: no CFG, trailing Euler (default 8; 2 tiny)",
    )
    parser.add_argument(
        "--dtype",
        choices=("auto", "bfloat16", "float16", "float32"),
        default="auto",
        help="both sides' weights (default: journeyd's pick_device: bf16 on a GPU or a CPU with native bf16)",
    )
    parser.add_argument(
        "--speedups",
        default="auto",
        help="journeyd's lever sets, ';'-separated, each as JOURNEYD_SPEEDUPS takes it (default: auto); "
        "the first is the side the targets are checked on",
    )
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated cases (default: {','.join(OPS)})")
    parser.add_argument("--configs-only", action="store_true", help="only the meta-device architecture check")
    args = parser.parse_args()
    _journeyd_importable()
    import diffusers
    import transformers

    from journeyd.engines.diffusion.loading import pick_device
    from journeyd.engines.diffusion.speedups import CHANGES_PICTURES, parse_speedups

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()

    families = ["sdxl", "sd15"] if args.family == "both" else [args.family]
    device, dtype = pick_device(None, args.dtype)
    if device.type == "mps":
        device, dtype = pick_device("cpu", args.dtype)  # full-size needs CUDA; tiny runs anywhere
    tiny = args.tiny or device.type != "cuda"
    mode = f"{device.type}-{'tiny' if tiny else 'full'}"
    steps = [int(s) for s in (args.steps or ("4,2" if tiny else "30,4")).split(",") if s.strip()]
    steps = list(dict.fromkeys(steps))
    distilled_max = args.distilled_max_steps if args.distilled_max_steps is not None else (2 if tiny else 8)
    settings = [Setting(n, n <= distilled_max) for n in steps]
    lever_sets = list(dict.fromkeys(parse_speedups(text, device) for text in args.speedups.split(";")))
    ops = [op for op in args.ops.split(",") if op.strip()]
    if unknown := set(ops) - set(OPS):
        parser.error(f"--ops: unknown {', '.join(sorted(unknown))}; choose from {', '.join(OPS)}")
    warmup = args.warmup if args.warmup is not None else 1
    reps = args.reps if args.reps is not None else (1 if args.quick else (2 if device.type == "cpu" else 3))

    started = time.perf_counter()
    print(f"mode {mode}, {dtype}, steps {steps}, families {families}; checking full-size architectures on meta")
    architecture = check_architectures(families)
    for family, check in architecture.items():
        print(
            f"  {family}: UNet {check['params']['unet'] / 1e9:.3f} B params "
            f"(match: {check['params_match']}), {check['unet_gflop_per_image_step_no_cfg']:.0f} GFLOP "
            f"per image-step, VAE decode {check['vae_decode_gflop_per_image']:.0f} GFLOP per image"
        )
    if not all(check["params_match"] for check in architecture.values()):
        print("the full-size architectures do not match the released checkpoints", file=sys.stderr)
        return 1
    if args.configs_only:
        print(json.dumps(architecture, indent=2))
        return 0

    peaks = [matmul_peak(device, dtype, args.quick)]
    print(f"matmul peak ({peaks[0]['dtype']}): {peaks[0]['tflops']:.1f} TFLOP/s")
    specs = TINY if tiny else FULL
    cases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="journeyd-bench-") as scratch:
        tokenizer = _tokenizer(Path(scratch) / "tokenizer")
        for family in families:
            kind = "tiny" if tiny else "full size"
            print(f"building {family} ({kind}, random weights) for {len(lever_sets) + 1} sides")
            cases += bench_family(
                family, specs[family], settings, lever_sets, ops, device, dtype, tokenizer, warmup, reps
            )
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    peaks.append(matmul_peak(device, dtype, args.quick))  # clocks may differ once warm: keep the best
    peak = max(peaks, key=lambda p: p["tflops"])
    for case in cases:
        for name in (*case["speedups_vs_diffusers"], "diffusers"):
            tflops = case[name].get("unet_tflops")
            case[name]["unet_peak_fraction"] = tflops / peak["tflops"] if tflops else None

    checks = []
    for case in cases:
        label = f"{case['family']} {case['op']} {case['steps']} steps"
        if case["op"] == "imagine_grid":
            value = case["speedup_vs_diffusers"]
            checks.append(
                {
                    "case": label,
                    "metric": "speedup_vs_diffusers",
                    "value": value,
                    "target": TARGET_GRID_SPEEDUP,
                    "met": value >= TARGET_GRID_SPEEDUP,
                }
            )
        fraction = case["journeyd"].get("unet_peak_fraction")
        checks.append(
            {
                "case": label,
                "metric": "journeyd_unet_peak_fraction",
                "value": fraction,
                "target": TARGET_UNET_PEAK_FRACTION,
                "met": fraction is not None and fraction >= TARGET_UNET_PEAK_FRACTION,
            }
        )
    intended = str(dtype).removeprefix("torch.")
    problems = sorted(
        {
            f"{name}'s UNet ran in {case[name].get('unet_input_dtype')} with "
            f"{case[name]['unet_weights_dtype']} weights, not {intended} ({case['family']})"
            for case in cases
            for name in (*case["speedups_vs_diffusers"], "diffusers")
            if intended != case[name]["unet_weights_dtype"] or intended != case[name].get("unet_input_dtype", intended)
        }
    )
    report = {
        "benchmark": "engine_gpu",
        "mode": mode,
        "mode_note": (
            "full-size architectures with random weights on the GPU"
            if mode == "cuda-full"
            else "tiny models: a correctness check of the benchmark, NOT a performance number"
        ),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": time.perf_counter() - started,
        "device": _device_info(device),
        "versions": _versions(),
        "settings": {
            "dtype": str(dtype).removeprefix("torch."),
            "attention": "SDPA (torch's default backend choice), both sides",
            "baseline": "eager diffusers pipelines, own copy of the weights, no compile",
            "journeyd": "journeyd.render.render -> DiffusionEngine, with apply_speedups(levers) as load_model does",
            "journeyd_speedups": {side_name(i, levers): sorted(levers) for i, levers in enumerate(lever_sets)},
            "images_per_call": IMAGES,
            "prompt": PROMPT,
            "guidance_with_cfg": GUIDANCE,
            "distilled_max_steps": distilled_max,
            "region_mask": f"centred square, {REGION_SIDE:.0%} of the side",
            "zoom": ZOOM,
            "warmup_runs": warmup,
            "timed_runs": reps,
            "unet_probe": "one extra untimed run per side: forward hooks with CUDA events; FLOPs on a meta copy",
        },
        "dtype_problems": problems,
        "matmul_peak": {**peak, "all": peaks},
        "architecture_check": architecture,
        "cases": cases,
        "targets": {
            "applies": mode == "cuda-full",
            "grid_speedup_vs_diffusers_at_least": TARGET_GRID_SPEEDUP,
            "unet_peak_fraction_at_least": TARGET_UNET_PEAK_FRACTION,
            "checked_on_levers": sorted(lever_sets[0]),
            "levers_that_change_the_pictures": sorted(lever_sets[0] & CHANGES_PICTURES),
            "checks": checks,
            "all_met": all(check["met"] for check in checks),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"engine_gpu-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    _print_table(cases)
    for problem in problems:
        print(f"WARNING: {problem}")
    print(f"matmul peak {peak['tflops']:.1f} TFLOP/s ({peak['dtype']}); targets apply: {report['targets']['applies']}")
    lossy = ", ".join(report["targets"]["levers_that_change_the_pictures"])
    print(
        f"targets met: {sum(c['met'] for c in checks)}/{len(checks)}"
        f"{f' (on levers that change the pictures: {lossy})' if lossy else ''}; written to {out.relative_to(ROOT)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
