"""Model profiles: which open model draws which Midjourney version.

The operator names one model (`JOURNEYD_MODEL`, every version maps to it) or several in a TOML file
(`JOURNEYD_MODELS`):

    [[profile]]
    name = "sdxl"
    model = "stabilityai/stable-diffusion-xl-base-1.0"   # hub id, diffusers folder or .safetensors file,
                                                        # or a catalog name (`journeyd models list`)
    inpaint_model = "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"   # optional
    config = "/models/sdxl-base"   # optional: configs for a single-file model (else its hub config, cached)
    versions = ["7", "6.1", "6"]      # --v labels it serves; "*" = any; the first profile is the default
    steps = 30
    guidance = 7.0
    speedups = "auto,compile,cache"   # optional: this model's levers (JOURNEYD_SPEEDUPS' syntax; else that)

    [[profile]]
    name = "flux"
    model = "black-forest-labs/FLUX.1-dev"
    inpaint_model = "black-forest-labs/FLUX.1-Fill-dev"   # FLUX.1-Fill does Region, Zoom and Pan
    # a FLUX file is the transformer alone: model = "/models/flux1-dev.safetensors" takes the text
    # encoders and VAE from config (default: the file's kind, e.g. black-forest-labs/FLUX.1-dev, cached);
    # inpaint_config does the same for a single-file inpaint_model
    versions = ["8"]
    steps = 28
    guidance = 3.5

    [[profile]]
    name = "lightning"
    model = "/models/sdxl-lightning-4step.safetensors"
    family = "sdxl"
    versions = ["niji6"]
    steps = 4
    guidance = 0.0
    scheduler = "euler_trailing"

    [[profile]]
    name = "lcm"
    model = "stabilityai/stable-diffusion-xl-base-1.0"
    lora = "latent-consistency/lcm-lora-sdxl"   # merged into the weights at load; lora_scale = 1.0
    versions = ["5.2"]
    steps = 4
    guidance = 1.0
    scheduler = "lcm"
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from journeyd.domain.errors import InvalidRequest
from journeyd.domain.prompt import PromptSpec

FAMILIES = ("sd15", "sdxl", "flux")
DEFAULT_SIZE = {"sd15": 512, "sdxl": 1024, "flux": 1024}
SCHEDULERS = ("default", "euler", "euler_a", "euler_trailing", "ddim", "dpmpp_2m", "dpmpp_2m_karras", "lcm")
_PIPELINE_FAMILIES = {
    "StableDiffusionPipeline": "sd15",
    "StableDiffusionInpaintPipeline": "sd15",
    "StableDiffusionImg2ImgPipeline": "sd15",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLInpaintPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl",
    "FluxPipeline": "flux",
    "FluxImg2ImgPipeline": "flux",
    "FluxInpaintPipeline": "flux",
    "FluxFillPipeline": "flux",
}


class ProfileError(ValueError):
    """A model configuration that cannot work; raised at start-up, naming the model."""


@dataclass(frozen=True)
class Profile:
    name: str
    model: str
    family: str
    inpaint_model: str | None = None
    versions: tuple[str, ...] = ("*",)
    steps: int = 30
    guidance: float = 7.0
    size: int = 0  # side of a square image at the model's native area; 0 = the family's
    scheduler: str = "default"
    lora: str | None = None  # merged into the weights at load (LCM-LoRA: with scheduler "lcm", ~4 steps)
    lora_scale: float = 1.0
    config: str | None = None  # for a single-file model: a diffusers folder or hub id with its configs
    inpaint_config: str | None = None  # the same, for a single-file inpaint_model
    variant: str | None = None  # the weight files of a hub id or folder to load: "fp16" = *.fp16.safetensors
    text_tokens: int = 0  # FLUX: T5 tokens of prompt (max_sequence_length); 0 = the pipeline's 512
    negative_guidance: float = 2.0  # FLUX has no negative prompt but through "true CFG": its scale for --no
    inpaint_guidance: float | None = None  # guidance of the inpaint_model; None: 30 for FLUX.1-Fill, else guidance
    speedups: str | None = None  # this model's levers, as JOURNEYD_SPEEDUPS takes them; None: the server's

    @property
    def region_guidance(self) -> float | None:
        """The inpainting model's own guidance, where it differs from the prompt-driven one."""
        if self.inpaint_guidance is not None:
            return self.inpaint_guidance
        return 30.0 if self.family == "flux" and self.inpaint_model else None

    @property
    def native(self) -> int:
        return self.size or DEFAULT_SIZE[self.family]


def detect_family(source: str) -> str | None:
    """The family from a diffusers folder's model_index.json, a checkpoint's keys or a hub id's name;
    None if unsure."""
    path = Path(source)
    if path.is_dir() and (path / "model_index.json").is_file():
        index = json.loads((path / "model_index.json").read_text())
        return _PIPELINE_FAMILIES.get(index.get("_class_name", ""))
    if path.is_file() and path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as checkpoint:
            keys = list(checkpoint.keys())
        if any(key.startswith("conditioner.embedders.1") for key in keys):
            return "sdxl"
        if any(
            key.startswith(("double_blocks.", "model.diffusion_model.double_blocks.", "single_transformer_blocks."))
            for key in keys
        ):  # FLUX.1 in Black Forest Labs' layout, or a diffusers transformer
            return "flux"
        if any(key.startswith("cond_stage_model.") for key in keys):
            return "sd15"
        return None
    name = source.lower()
    if "flux" in name:
        return "flux"
    return "sdxl" if "xl" in name else ("sd15" if "stable-diffusion" in name else None)


def _model_of(values: dict[str, Any]) -> str:
    """A table's model, once its keys are checked: a key no profile has is refused (a misspelt setting
    would otherwise be ignored without a word)."""
    if unknown := sorted(set(values) - {f.name for f in fields(Profile)}):
        raise ProfileError(
            f"profile {values.get('name', values.get('model', '?'))!r}: unknown setting {', '.join(unknown)}; "
            f"a profile takes {', '.join(f.name for f in fields(Profile))}"
        )
    try:
        return str(values["model"])
    except KeyError:
        raise ProfileError(f"profile {values.get('name', '?')!r} has no model") from None


def _versions_of(values: dict[str, Any]) -> tuple[str, ...]:
    versions = values.get("versions", ["*"])
    return tuple(str(v) for v in ([versions] if isinstance(versions, str) else versions))


def profile_from(values: dict[str, Any]) -> Profile:
    """A profile from a TOML table (or keyword arguments), checked."""
    model = _model_of(values)
    family = values.get("family") or detect_family(model)
    if family not in FAMILIES:
        raise ProfileError(
            f"cannot tell which family {model!r} is; set family to one of {', '.join(FAMILIES)}"
            if family is None
            else f"model {model!r}: family {family!r} is not one of {', '.join(FAMILIES)}"
        )
    scheduler = values.get("scheduler", "default")
    if scheduler not in SCHEDULERS:
        raise ProfileError(f"model {model!r}: scheduler {scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    return Profile(
        name=str(values.get("name", Path(model).stem or model)),
        model=model,
        family=family,
        inpaint_model=values.get("inpaint_model"),
        versions=_versions_of(values),
        steps=int(values.get("steps", 30)),
        guidance=float(values.get("guidance", 7.0)),
        size=int(values.get("size", 0)),
        scheduler=scheduler,
        lora=values.get("lora"),
        lora_scale=float(values.get("lora_scale", 1.0)),
        config=values.get("config"),
        inpaint_config=values.get("inpaint_config"),
        variant=values.get("variant"),
        text_tokens=int(values.get("text_tokens", 0)),
        negative_guidance=float(values.get("negative_guidance", 2.0)),
        inpaint_guidance=float(values["inpaint_guidance"]) if "inpaint_guidance" in values else None,
        speedups=str(values["speedups"]) if values.get("speedups") is not None else None,
    )


def _tables(model: str | None, models_file: str | None, family: str | None, extra: dict[str, Any] | None) -> list[dict]:
    if models_file:
        tables = tomllib.loads(Path(models_file).read_text()).get("profile", [])
        if not tables:
            raise ProfileError(f"{models_file} has no [[profile]] tables")
        return [_from_catalog(table) for table in tables]
    if not model:
        raise ProfileError("the diffusers engine needs a model: set JOURNEYD_MODEL or JOURNEYD_MODELS")
    return [_from_catalog({"model": model, "family": family, **(extra or {})})]


def _from_catalog(table: dict[str, Any]) -> dict[str, Any]:
    """A table whose model is a catalog name (`sdxl`), as the catalog's settings for it under the
    table's own; any other table as it is."""
    from journeyd.models.hub import profile_for

    named = profile_for(str(table.get("model", "")))
    if named is None:
        return table
    return {**named, **{key: value for key, value in table.items() if key != "model" and value is not None}}


def load_profiles(
    model: str | None = None,
    models_file: str | None = None,
    family: str | None = None,
    extra: dict[str, Any] | None = None,
) -> list[Profile]:
    """Profiles from settings: one model for every version, or the [[profile]] tables of a file."""
    return [profile_from(table) for table in _tables(model, models_file, family, extra)]


def load_versions(
    model: str | None = None, models_file: str | None = None, extra: dict[str, Any] | None = None
) -> Versions:
    """The versions table of the same settings, read without looking at any model (no file, folder or
    hub id is touched, so the models need not be there): what an API node of a fleet checks prompts
    against, so that it accepts exactly what its workers accept. Each table's settings are checked by
    name, as `load_profiles` checks them."""
    tables = _tables(model, models_file, None, extra)
    for table in tables:
        _model_of(table)
    return Versions(tuple(_versions_of(table) for table in tables))


@dataclass(frozen=True)
class Versions:
    """--v / --niji labels to profiles, by their place in the configuration; a prompt with neither gets
    the first profile. This is the rule of what a diffusers server accepts: the engine checks prompts
    with it (`DiffusionEngine.check`), and so does an API node, which loads no model (`load_versions`)."""

    labels: Sequence[tuple[str, ...]] = field(default_factory=tuple)  # each profile's `versions`; "*" = any

    @classmethod
    def of(cls, profiles: Iterable[Profile]) -> Versions:
        return cls(tuple(profile.versions for profile in profiles))

    def label_of(self, version: str | None, niji: str | None) -> str | None:
        return f"niji{niji}" if niji is not None else version

    def index_for(self, version: str | None, niji: str | None) -> int | None:
        label = self.label_of(version, niji)
        if label is None:
            return 0
        for i, labels in enumerate(self.labels):
            if "*" in labels or label in labels:
                return i
        return None

    def index_of(self, prompt: PromptSpec) -> int:
        """The profile that draws `prompt`; InvalidRequest (a 4xx at submit) when none serves its version."""
        index = self.index_for(prompt.version, prompt.niji)
        if index is None:
            label = self.label_of(prompt.version, prompt.niji)
            flag = f"--niji {prompt.niji}" if prompt.niji is not None else f"--v {prompt.version}"
            raise InvalidRequest(
                f"{flag}: no model is configured for version {label}; this server serves "
                f"{', '.join(self.served())} (or leave the version out)"
            )
        return index

    def served(self) -> list[str]:
        return sorted({label for labels in self.labels for label in labels})


@dataclass(frozen=True)
class ProfileRules:
    """What a diffusers server accepts, known from its profiles alone: the prompt rules of an API node
    of a fleet, which draws nothing and so loads no model (see `engines.load_prompt_rules`)."""

    versions: Versions
    name: str = "diffusers"

    def check(self, prompt: PromptSpec) -> None:
        self.versions.index_of(prompt)
