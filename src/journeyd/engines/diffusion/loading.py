"""Loading a profile's model once, and the pipelines that share its weights.

A model comes from a hub id (through the local cache, honouring HF_HUB_OFFLINE), a diffusers
folder, or one `.safetensors` checkpoint. txt2img, img2img and inpaint are built with `from_pipe`,
so they share one set of weights. A dedicated inpainting checkpoint, if configured, is the only
second model (for FLUX.1-Fill, only its transformer: see `_load_inpaint`).
A single-file FLUX checkpoint is read for its transformer only (Black Forest Labs' files hold nothing
else); the text encoders and VAE come from `config` (default: the hub repository diffusers names for
that kind of checkpoint, from the local cache).
Everything is loaded at start-up: a missing or broken model stops the server with a message naming
it, instead of failing the first task. A catalog name (`sdxl`) arrives here as its hub id, with the
`variant` of its weight files (profiles.py resolves it; `journeyd models pull` downloads it).
SD 1.x pipelines load without their safety checker (the catalog does not download it): its verdict is
a black picture that nothing reports, and moderation here is the banned-words list.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from journeyd.engines.diffusion import previews
from journeyd.engines.diffusion.adapters import Adapters, load_adapters
from journeyd.engines.diffusion.profiles import Profile
from journeyd.engines.diffusion.speedups import apply_speedups, denoiser, speed_up_denoiser


class ModelLoadError(RuntimeError):
    """A model that could not be loaded: the message names it and says what was wrong."""


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def devices_of(requested: str | None) -> list[str | None]:
    """The devices a `--device` setting names, one engine each: a comma list (`cuda:0,cuda:1`) names
    them; none named, every CUDA GPU there is where there are several, else the best one."""
    if requested:
        return [part.strip() for part in requested.split(",") if part.strip()]
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{index}" for index in range(count)] if count > 1 else [None]


def pick_device(requested: str | None = None, dtype: str | None = None) -> tuple[torch.device, torch.dtype]:
    """cuda, then mps, then cpu. With `dtype` "auto" (or None): half precision on a GPU (bf16 where
    supported), bf16 on a CPU with native bf16 arithmetic, fp32 on any other CPU."""
    if requested:
        device = _named_device(requested)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if dtype and dtype != "auto":
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of auto, {', '.join(DTYPES)}")
        return device, DTYPES[dtype]
    if device.type == "cuda":
        with torch.cuda.device(device):  # bf16 only where it is native (Ampere on): T4s and V100s emulate it, slowly
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        return device, torch.bfloat16 if native else torch.float16
    if device.type == "mps":
        return device, torch.float16
    return device, torch.bfloat16 if cpu_has_bf16() else torch.float32


def _named_device(name: str) -> torch.device:
    """A device the operator named, if this machine has it."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not one of cuda, cuda:N, mps or cpu") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {name!r}: this machine has no CUDA GPU that torch {torch.__version__} can use")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r}: this machine has no Apple GPU that torch can use")
    return device


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX512-BF16, AMX). There a full SD 1.5 UNet runs
    2.5x faster in bf16 than in fp32 (measured on a 2-core AVX512-BF16 VM); elsewhere bf16 is emulated
    and slower."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check() for check in checks if check is not None)


def _pipeline_classes(family: str) -> tuple[Any, Any, Any, Any]:
    """txt2img, img2img, inpaint over the base model, and inpaint with a dedicated model."""
    import diffusers

    if family == "flux":
        return (
            diffusers.FluxPipeline,
            diffusers.FluxImg2ImgPipeline,
            diffusers.FluxInpaintPipeline,
            diffusers.FluxFillPipeline,
        )
    if family == "sdxl":
        inpaint = diffusers.StableDiffusionXLInpaintPipeline
        return diffusers.StableDiffusionXLPipeline, diffusers.StableDiffusionXLImg2ImgPipeline, inpaint, inpaint
    inpaint = diffusers.StableDiffusionInpaintPipeline
    return diffusers.StableDiffusionPipeline, diffusers.StableDiffusionImg2ImgPipeline, inpaint, inpaint


def offline() -> bool:
    """Whether the hub may not be asked (HF_HUB_OFFLINE): hub models come from the local cache alone."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _load(
    cls: Any,
    source: str,
    dtype: torch.dtype,
    config: str | None = None,
    subfolder: str | None = None,
    variant: str | None = None,
    **parts: Any,
) -> Any:
    """A pipeline, or with `subfolder` one of its models, from a hub id, a diffusers folder or a single
    file (whose configs come from `config`, else from the hub repository diffusers infers from its keys).
    `variant` picks a folder's or hub id's weight files (`fp16`: `*.fp16.safetensors`). `parts` are
    components already loaded (or None: left out), for a pipeline from a folder or hub id."""
    path = Path(source).expanduser()
    where = {"subfolder": subfolder} if subfolder else {}
    parts = {**parts, **({"variant": variant} if variant else {})}
    try:
        if path.is_file():
            if path.suffix not in (".safetensors", ".ckpt"):
                raise ModelLoadError(f"{source}: a single-file model must be a .safetensors (or .ckpt) checkpoint")
            extra = {"config": config} if config else {}
            return cls.from_single_file(str(path), dtype=dtype, local_files_only=offline(), **extra, **where)
        if path.exists() or source.startswith((".", "/", "~")):
            if not (path / "model_index.json").is_file():
                raise ModelLoadError(
                    f"{source}: not a diffusers folder (no model_index.json) and not a .safetensors file"
                )
            return cls.from_pretrained(str(path), dtype=dtype, local_files_only=True, **where, **parts)
        return cls.from_pretrained(source, dtype=dtype, local_files_only=offline(), **where, **parts)
    except ModelLoadError:
        raise
    except Exception as error:  # diffusers raises many kinds; all mean "this model is not usable"
        raise ModelLoadError(
            f"could not load model {source!r}: {type(error).__name__}: {reason_of(error)}{_pull_hint(source)}"
        ) from error


def _pull_hint(source: str) -> str:
    """How to download a catalog model that is not in the cache."""
    from journeyd.models.catalog import holding

    entry = holding(source)
    return f" (`journeyd models pull {entry.name}` downloads it)" if entry else ""


def _load_base(profile: Profile, dtype: torch.dtype) -> Any:
    """The profile's txt2img pipeline. A FLUX checkpoint file is a transformer: the rest of the
    pipeline comes from `config`, or from the repository its keys name (FLUX.1-dev or -schnell)."""
    cls = _pipeline_classes(profile.family)[0]
    if profile.family != "flux" or not Path(profile.model).expanduser().is_file():
        return _load(cls, profile.model, dtype, profile.config, variant=profile.variant, **_without_checker(profile))
    config = profile.config or _flux_repository(profile.model)
    try:
        return _load(cls, config, dtype, transformer=_flux_transformer(profile.model, dtype, config))
    except ModelLoadError as error:
        raise ModelLoadError(
            f"{error} (the transformer's config, text encoders and VAE come from {config!r})"
        ) from error


def _without_checker(profile: Profile) -> dict[str, Any]:
    return {"safety_checker": None, "requires_safety_checker": False} if profile.family == "sd15" else {}


def _flux_transformer(source: str, dtype: torch.dtype, config: str | None) -> Any:
    import diffusers

    return _load(diffusers.FluxTransformer2DModel, source, dtype, config, "transformer")


def _flux_repository(checkpoint: str) -> str:
    """The hub repository of a FLUX checkpoint file's kind (FLUX.1-dev, -schnell, -Fill), as diffusers
    judges it from the keys and shapes in the file's header (nothing is loaded)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS, infer_diffusers_model_type
    from safetensors import safe_open

    try:
        with safe_open(checkpoint, "pt") as tensors:
            names = tensors.keys()  # safe_open is not iterable
            shapes = {key: torch.empty(tensors.get_slice(key).get_shape(), device="meta") for key in names}
        kind = infer_diffusers_model_type(shapes)
    except Exception as error:  # not a safetensors file
        raise ModelLoadError(f"{checkpoint}: not a readable .safetensors checkpoint: {reason_of(error)}") from error
    if not kind.startswith("flux-"):
        raise ModelLoadError(
            f"{checkpoint}: not a checkpoint in Black Forest Labs' layout, so which FLUX.1 it is cannot be told; "
            "set config to the diffusers folder or hub id it belongs with (e.g. black-forest-labs/FLUX.1-dev)"
        )
    return DIFFUSERS_DEFAULT_PIPELINE_PATHS[kind]["pretrained_model_name_or_path"]


def reason_of(error: Exception) -> str:
    """The first line of what a library said, which is the part that names the problem."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def make_scheduler(kind: str, base: Any) -> Any:
    """A fresh scheduler for one request (schedulers keep per-run state and are not thread-safe)."""
    import diffusers

    config = base.config
    if kind == "default":
        return type(base).from_config(config)
    if kind == "euler":
        return diffusers.EulerDiscreteScheduler.from_config(config)
    if kind == "euler_a":
        return diffusers.EulerAncestralDiscreteScheduler.from_config(config)
    if kind == "euler_trailing":  # SDXL-Lightning / Turbo
        return diffusers.EulerDiscreteScheduler.from_config(config, timestep_spacing="trailing")
    if kind == "ddim":
        return diffusers.DDIMScheduler.from_config(config)
    if kind == "dpmpp_2m":
        return diffusers.DPMSolverMultistepScheduler.from_config(config)
    if kind == "dpmpp_2m_karras":
        return diffusers.DPMSolverMultistepScheduler.from_config(config, use_karras_sigmas=True)
    if kind == "lcm":
        return diffusers.LCMScheduler.from_config(config)
    raise ValueError(kind)


@dataclass
class LoadedModel:
    """One profile's pipelines. Calls are serialised by `lock`: they share modules, and --tile
    switches the convolutions of those shared modules to circular padding for one call."""

    profile: Profile
    txt2img: Any
    img2img: Any
    inpaint: Any
    preview_map: torch.Tensor  # latent-to-RGB for step previews (previews.py)
    adapters: Adapters | None = None  # its IP-Adapters, switched on per call (adapters.py)
    lock: threading.Lock = field(default_factory=threading.Lock)
    schedulers: dict[str, Any] = field(init=False)  # each pipeline's scheduler as loaded: the template

    def __post_init__(self) -> None:
        self.schedulers = {kind: self.pipeline_of(kind).scheduler for kind in ("txt2img", "img2img", "inpaint")}

    def pipeline_of(self, kind: str) -> Any:
        return {"txt2img": self.txt2img, "img2img": self.img2img, "inpaint": self.inpaint}[kind]

    def pipeline(self, kind: str) -> Any:
        """The pipeline for one request, given a fresh scheduler of the profile's kind. Call it holding
        `lock`: a pipeline keeps per-call state (its scheduler, guidance, step count). The pipelines
        are built once: building one per request (`from_pipe`) costs tens of ms for a large model."""
        pipe = self.pipeline_of(kind)
        pipe.scheduler = make_scheduler(self.profile.scheduler, self.schedulers[kind])
        return pipe


def _derive(cls: Any, base: Any, **components: Any) -> Any:
    """`cls.from_pipe(base)` without its surprises: diffusers casts the shared modules to float32
    in place unless told the dtype (which would turn a bf16 model into fp32 for everyone), and the
    new pipeline shows progress bars again."""
    pipe = cls.from_pipe(base, dtype=base.dtype, **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_model(
    profile: Profile, device: torch.device, dtype: torch.dtype, speedups: frozenset[str] = frozenset()
) -> LoadedModel:
    """Load a profile's model (and its dedicated inpainting model) onto `device`, with `speedups`."""
    txt2img = _load_base(profile, dtype)
    if profile.lora:
        _bake_lora(txt2img, profile)
    txt2img.to(device)
    inpaint = _load_inpaint(profile, dtype, txt2img)
    try:
        apply_speedups(txt2img, speedups)
        if inpaint is not None:
            if inpaint.vae is txt2img.vae:  # FLUX.1-Fill: only the transformer is its own
                speed_up_denoiser(denoiser(inpaint), speedups)
            else:
                apply_speedups(inpaint, speedups)
    except Exception as error:  # e.g. fused QKV on a UNet with added KV projections
        raise ModelLoadError(
            f"model {profile.model!r}: speed-ups {', '.join(sorted(speedups))} failed: {error}"
        ) from error
    return share_weights(profile, txt2img, inpaint, _load_adapters(profile, txt2img))


def _load_adapters(profile: Profile, txt2img: Any) -> Adapters | None:
    """After the speed-ups, which would replace the adapters' attention processors with their own."""
    try:
        return load_adapters(profile, txt2img, offline())
    except Exception as error:  # a missing file, adapter weights for another model's UNet
        names = ", ".join(
            f"{s.model}/{s.subfolder}/{s.weight_name}".replace("//", "/") for s in profile.adapters.values()
        )
        raise ModelLoadError(f"could not load IP-Adapter {names} for {profile.model!r}: {reason_of(error)}") from error


def _load_inpaint(profile: Profile, dtype: torch.dtype, txt2img: Any) -> Any | None:
    """The dedicated inpainting pipeline, if the profile names one. FLUX.1-Fill's text encoders and VAE
    are FLUX.1's own, unchanged: only its transformer is loaded, and the rest shared (no second
    T5-XXL, ~9.5 GB in bf16). An SD 1.5 or SDXL inpainting checkpoint is loaded whole, since
    fine-tunes often train their text encoders and an inpainting model expects its own."""
    if not profile.inpaint_model:
        return None
    dedicated_cls = _pipeline_classes(profile.family)[3]
    if profile.family != "flux":
        inpaint = _load(
            dedicated_cls,
            profile.inpaint_model,
            dtype,
            profile.inpaint_config,
            variant=profile.variant,
            **_without_checker(profile),
        )
        return inpaint.to(txt2img.device)
    transformer = _flux_transformer(profile.inpaint_model, dtype, profile.inpaint_config).to(txt2img.device)
    return _derive(dedicated_cls, txt2img, transformer=transformer)


def _bake_lora(pipe: Any, profile: Profile) -> None:
    """Merge the profile's LoRA (LCM-LoRA, a style LoRA: a .safetensors file, a folder or a hub id)
    into the weights, then drop the adapter: plain modules cost nothing per step, and take fused
    QKV and compiling like any other."""
    source = Path(profile.lora or "").expanduser()
    where = {"weight_name": source.name} if source.is_file() else {}
    try:
        pipe.load_lora_weights(
            str(source.parent) if source.is_file() else profile.lora, local_files_only=offline(), **where
        )
        pipe.fuse_lora(lora_scale=profile.lora_scale)
        pipe.unload_lora_weights()
    except Exception as error:  # a missing file, a LoRA for another architecture, no PEFT installed
        raise ModelLoadError(
            f"could not load LoRA {profile.lora!r} for {profile.model!r}: {reason_of(error)}"
        ) from error


def share_weights(
    profile: Profile, txt2img: Any, inpaint: Any | None = None, adapters: Adapters | None = None
) -> LoadedModel:
    """The three pipelines over one model's weights (and a dedicated inpainting pipeline, if given);
    without one, the base model inpaints by blending latents at every step."""
    _, img2img_cls, inpaint_cls, _ = _pipeline_classes(profile.family)
    for pipe in (txt2img, inpaint):
        if pipe is not None:
            pipe.set_progress_bar_config(disable=True)
    return LoadedModel(
        profile,
        txt2img,
        _derive(img2img_cls, txt2img),
        inpaint or _derive(inpaint_cls, txt2img),
        previews.fit(txt2img.vae),  # now, not at the first preview: a task's steps should not wait for it
        adapters,
    )
