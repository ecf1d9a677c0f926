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
    captioner = "Salesforce/blip-image-captioning-large"   # optional: Describe's BLIP model (hub id or folder)
    # optional IP-Adapters (SD 1.5 and SDXL), each a weights file in a hub repository or folder: ip_adapter
    # steers image prompts (--iw) and Blend, ip_adapter_style --sref (--sw), ip_adapter_face --cref (--cw).
    # They share one CLIP image encoder: image_encoder is diffusers' image_encoder_folder (a bare name is
    # under subfolder, a path with a "/" is from the repository's root; default "image_encoder")
    [profile.ip_adapter]
    model = "h94/IP-Adapter"
    subfolder = "sdxl_models"
    weight_name = "ip-adapter_sdxl_vit-h.safetensors"
    image_encoder = "models/image_encoder"
    [profile.ip_adapter_face]
    model = "h94/IP-Adapter"
    subfolder = "sdxl_models"
    weight_name = "ip-adapter-plus-face_sdxl_vit-h.safetensors"
    image_encoder = "models/image_encoder"

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
from journeyd.engines.diffusion.phrases import check_shortenable

FAMILIES = ("sd15", "sdxl", "flux")
ADAPTER_FAMILIES = ("sd15", "sdxl")  # whose UNets take diffusers' IP-Adapters (FLUX's XLabs adapters are not wired)
# a profile's IP-Adapter settings and the references each steers with
ADAPTERS = {"ip_adapter": "image", "ip_adapter_style": "style", "ip_adapter_face": "face"}
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
class AdapterSource:
    """Where one IP-Adapter's weights are, as diffusers' `load_ip_adapter` takes them."""

    model: str  # hub id or folder
    weight_name: str  # the weights file in it, e.g. ip-adapter_sd15.safetensors
    subfolder: str = ""
    image_encoder: str = "image_encoder"  # the CLIP vision encoder's folder (see the module's example)

    @property
    def encoder_path(self) -> tuple[str, str]:
        """Where diffusers reads the image encoder from: (repository or folder, its folder in it)."""
        folder = self.image_encoder if "/" in self.image_encoder else f"{self.subfolder}/{self.image_encoder}"
        return self.model, folder.strip("/")


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
    captioner: str | None = None  # Describe's captioning model (BLIP), loaded on the first describe
    ip_adapter: AdapterSource | None = None  # image prompts (--iw) and Blend
    ip_adapter_style: AdapterSource | None = None  # --sref (--sw)
    ip_adapter_face: AdapterSource | None = None  # --cref (--cw)

    @property
    def adapters(self) -> dict[str, AdapterSource]:
        """The IP-Adapters configured, by the reference each steers with ("image", "style", "face")."""
        return {kind: source for key, kind in ADAPTERS.items() if (source := getattr(self, key)) is not None}

    @property
    def region_guidance(self) -> float | None:
        """The inpainting model's own guidance, where it differs from the prompt-driven one."""
        if self.inpaint_guidance is not None:
            return self.inpaint_guidance
        return 30.0 if self.family == "flux" and self.inpaint_model else None

    @property
    def native(self) -> int:
        return self.size or DEFAULT_SIZE[self.family]


# (flag, IP-Adapter kind, profile setting, PromptSpec field of its image URLs) of the references a prompt can carry
REFERENCE_FLAGS = (
    ("--sref", "style", "ip_adapter_style", "style_refs"),
    ("--cref", "face", "ip_adapter_face", "character_refs"),
)
REFERENCE_WORDS = {"style": "style reference", "face": "character reference"}


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


def _adapter_of(values: dict[str, Any], key: str) -> AdapterSource | None:
    table = values.get(key)
    if table is None:
        return None
    where = f"profile {values.get('name', values['model'])!r}: {key}"
    names = [f.name for f in fields(AdapterSource)]
    if not isinstance(table, dict):
        raise ProfileError(f"{where} must be a table of {', '.join(names)}")
    if unknown := sorted(set(table) - set(names)):
        raise ProfileError(f"{where}: unknown setting {', '.join(unknown)}; it takes {', '.join(names)}")
    if missing := [name for name in ("model", "weight_name") if not table.get(name)]:
        raise ProfileError(f"{where} has no {' or '.join(missing)}")
    return AdapterSource(**{name: str(value) for name, value in table.items()})


def _adapter_kinds(values: dict[str, Any]) -> frozenset[str]:
    return frozenset(kind for key, kind in ADAPTERS.items() if values.get(key) is not None)


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
    if _adapter_kinds(values) and family not in ADAPTER_FAMILIES:
        raise ProfileError(f"model {model!r}: IP-Adapters work on {', '.join(ADAPTER_FAMILIES)} models, not {family}")
    adapters = {key: _adapter_of(values, key) for key in ADAPTERS}
    if len({source.encoder_path for source in adapters.values() if source is not None}) > 1:
        raise ProfileError(
            f"model {model!r}: its IP-Adapters share one image encoder, but name different ones; "
            "use adapters made for the same encoder (e.g. all ViT-H) and the same image_encoder"
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
        captioner=str(values["captioner"]) if values.get("captioner") else None,
        **adapters,
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
    return Versions(
        tuple(_versions_of(table) for table in tables),
        tuple(_adapter_kinds(table) for table in tables),
        any(table.get("captioner") for table in tables),
    )


@dataclass(frozen=True)
class Versions:
    """--v / --niji labels to profiles, by their place in the configuration (a prompt with neither gets
    the first profile), and what else each profile can do: its IP-Adapters, a captioner. This is the
    rule of what a diffusers server accepts: the engine checks prompts with it (`VersionRules`), and so
    does an API node, which loads no model (`load_versions`)."""

    labels: Sequence[tuple[str, ...]] = field(default_factory=tuple)  # each profile's `versions`; "*" = any
    adapters: Sequence[frozenset[str]] = ()  # each profile's IP-Adapters, by reference kind (Profile.adapters)
    describes: bool = False  # whether a profile names a captioner

    @classmethod
    def of(cls, profiles: Iterable[Profile]) -> Versions:
        profiles = list(profiles)
        return cls(
            tuple(profile.versions for profile in profiles),
            tuple(frozenset(profile.adapters) for profile in profiles),
            any(profile.captioner for profile in profiles),
        )

    def check(self, prompt: PromptSpec) -> None:
        """The rule of what a diffusers server draws: a served version, and a reference (--sref, --cref)
        only where that version's model has the IP-Adapter for it. InvalidRequest otherwise."""
        self.check_references(prompt, [kind for _, kind, _, refs in REFERENCE_FLAGS if getattr(prompt, refs, ())])

    def check_references(self, prompt: PromptSpec, kinds: Iterable[str]) -> None:
        """References of `kinds` ("style", "face") only where the prompt's model has their adapters."""
        index, kinds = self.index_of(prompt), set(kinds)
        for flag, kind, setting, _ in REFERENCE_FLAGS:
            if kind in kinds and kind not in self._adapters_of(index):
                raise InvalidRequest(
                    f"{flag}: the model that draws {self._version_words(prompt)} has no {kind} IP-Adapter, so it "
                    f"cannot follow a {REFERENCE_WORDS[kind]}; its profile needs {setting} (or leave {flag} out)"
                )

    def check_blend(self, prompt: PromptSpec) -> None:
        """Blend mixes the images through the model's IP-Adapter: refused where it has none."""
        index = self.index_of(prompt)
        if "image" not in self._adapters_of(index):
            raise InvalidRequest(
                f"blend: the model that draws {self._version_words(prompt)} has no IP-Adapter to mix images with; "
                "its profile needs ip_adapter"
            )

    def check_shorten(self, prompt: PromptSpec) -> None:
        self.index_of(prompt)
        check_shortenable(prompt.text)

    def check_describe(self) -> None:
        if not self.describes:
            raise InvalidRequest("describe: no captioning model is configured; a profile needs captioner")

    def _adapters_of(self, index: int) -> frozenset[str]:
        return self.adapters[index] if index < len(self.adapters) else frozenset()

    def _version_words(self, prompt: PromptSpec) -> str:
        label = self.label_of(prompt.version, prompt.niji)
        return f"version {label}" if label else "prompts without --v"

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


class VersionRules:
    """What a diffusers server accepts, read from its `versions` table: the rules of the engine and of
    an API node of a fleet (`ProfileRules`) alike. Blend, Describe and Shorten have their own checks,
    for the submits of those actions."""

    versions: Versions

    def check(self, prompt: PromptSpec) -> None:
        self.versions.check(prompt)

    def check_blend(self, prompt: PromptSpec) -> None:
        self.versions.check_blend(prompt)

    def check_shorten(self, prompt: PromptSpec) -> None:
        self.versions.check_shorten(prompt)

    def check_describe(self) -> None:
        self.versions.check_describe()


@dataclass(frozen=True)
class ProfileRules(VersionRules):
    """What a diffusers server accepts, known from its profiles alone: the prompt rules of an API node
    of a fleet, which draws nothing and so loads no model (see `engines.load_prompt_rules`)."""

    versions: Versions
    name: str = "diffusers"
