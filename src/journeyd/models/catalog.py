"""The curated models `journeyd models` lists and pulls, and `--model NAME` serves: the one table of them.

Each entry is one or two hub repositories (the model, and the inpainting model that does Vary (Region),
Zoom and Pan) with the exact weight files journeyd loads: half-precision safetensors only, never the other
variants a repository also holds (fp32 copies, single-file checkpoints, ONNX, Flax). Configs and tokenizers
come with them (`CONFIG_PATTERNS`: small files). Sizes and memory are approximate, from the repositories'
file listings and the model cards (decimal GB); they size the disk check and tell the user what to expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GB = 1_000_000_000
# Every repository's configs, tokenizer files and index files (a few MB in all). `*` crosses folders.
CONFIG_PATTERNS = ("*.json", "*.txt", "*.model")


class UnknownModel(LookupError):
    """A name the catalog does not have; the message lists the names it has."""


@dataclass(frozen=True)
class Repo:
    """A hub repository and what journeyd needs of it."""

    id: str
    weights: tuple[str, ...]  # the exact weight files, relative to the repository's root
    size: int  # bytes to download, approximately: the weights, plus configs
    gated: bool = False  # the hub serves its files only to a logged-in user who accepted its terms
    marker: str = "model_index.json"  # a config that must be there too (a pipeline's index, or a model's config)

    @property
    def patterns(self) -> list[str]:
        """What a pull fetches (patterns as `snapshot_download` takes them): the weights by name, and small files."""
        return [*self.weights, *CONFIG_PATTERNS]

    @property
    def needed(self) -> tuple[str, ...]:
        """The files whose presence in the cache means the repository is downloaded."""
        return (self.marker, *self.weights)

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.id}"


@dataclass(frozen=True)
class Entry:
    name: str
    good_for: str
    family: str  # sd15 (StableDiffusionPipeline: SD 1.x and 2.x), sdxl or flux
    model: Repo
    inpaint: Repo | None  # the dedicated inpainting model, loaded next to the model when it is in the cache
    memory: int  # bytes of GPU memory both take in half precision (a CPU needs about twice as much RAM)
    settings: dict[str, Any]  # the profile's settings (steps, guidance, scheduler, size, variant)

    @property
    def repos(self) -> tuple[Repo, ...]:
        return (self.model, self.inpaint) if self.inpaint else (self.model,)

    @property
    def size(self) -> int:
        return sum(repo.size for repo in self.repos)

    @property
    def gated(self) -> bool:
        return any(repo.gated for repo in self.repos)


def _sd_weights(*text_encoders: str) -> tuple[str, ...]:
    """The fp16 variant files of a Stable Diffusion pipeline (diffusers names them `*.fp16.safetensors`)."""
    return (
        "unet/diffusion_pytorch_model.fp16.safetensors",
        *(f"{folder}/model.fp16.safetensors" for folder in text_encoders),
        "vae/diffusion_pytorch_model.fp16.safetensors",
    )


def _flux_transformer() -> tuple[str, ...]:
    return tuple(f"transformer/diffusion_pytorch_model-0000{i}-of-00003.safetensors" for i in (1, 2, 3))


# FLUX.1's weights are bf16 already, with no variant: its text encoders (CLIP-L, T5-XXL in two shards) and VAE.
_FLUX_WEIGHTS = (
    *_flux_transformer(),
    "text_encoder/model.safetensors",
    "text_encoder_2/model-00001-of-00002.safetensors",
    "text_encoder_2/model-00002-of-00002.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
)
_SD = _sd_weights("text_encoder")  # SD 1.5, SD 2.1 and SD-Turbo: one text encoder
_SDXL = _sd_weights("text_encoder", "text_encoder_2")
_FLUX_FILL = Repo(
    "black-forest-labs/FLUX.1-Fill-dev",
    _flux_transformer(),  # only its transformer: its text encoders and VAE are FLUX.1's own
    size=int(23.8 * GB),
    gated=True,
    marker="transformer/config.json",
)
_FEW_STEPS = {"steps": 4, "guidance": 0.0, "scheduler": "euler_trailing", "variant": "fp16"}

CATALOG: tuple[Entry, ...] = (
    Entry(
        "sd-turbo",
        "a first try: 512 px pictures in 1-4 steps, fast enough for a CPU or a small GPU",
        "sd15",
        Repo("stabilityai/sd-turbo", _SD, size=int(2.6 * GB)),
        None,  # the base model inpaints by blending latents
        memory=4 * GB,
        settings={**_FEW_STEPS, "size": 512},
    ),
    Entry(
        "sdxl-turbo",
        "fast, and better pictures than sd-turbo: 512 px in 1-4 steps",
        "sdxl",
        Repo("stabilityai/sdxl-turbo", _SDXL, size=int(6.9 * GB)),
        None,
        memory=8 * GB,
        settings={**_FEW_STEPS, "size": 512},
    ),
    Entry(
        "sdxl",
        "good all-round 1024 px pictures with a real inpainting model for Vary (Region), Zoom and Pan",
        "sdxl",
        Repo("stabilityai/stable-diffusion-xl-base-1.0", _SDXL, size=int(6.9 * GB)),
        Repo("diffusers/stable-diffusion-xl-1.0-inpainting-0.1", _SDXL, size=int(6.9 * GB)),
        memory=16 * GB,
        settings={"steps": 30, "guidance": 7.0, "variant": "fp16"},
    ),
    Entry(
        "sd15",
        "the classic 512 px model and its inpainting model; the most LoRAs and fine-tunes",
        "sd15",
        Repo("stable-diffusion-v1-5/stable-diffusion-v1-5", _SD, size=int(2.2 * GB)),
        Repo("stable-diffusion-v1-5/stable-diffusion-inpainting", _SD, size=int(2.2 * GB)),
        memory=5 * GB,
        settings={"steps": 30, "guidance": 7.0, "variant": "fp16"},
    ),
    Entry(
        "flux-schnell",
        "the best prompt following here, in 4 steps; FLUX.1-Fill (gated) for Region, Zoom and Pan",
        "flux",
        Repo("black-forest-labs/FLUX.1-schnell", _FLUX_WEIGHTS, size=int(33.7 * GB)),
        _FLUX_FILL,
        memory=58 * GB,
        settings={"steps": 4, "guidance": 0.0, "text_tokens": 256},
    ),
    Entry(
        "flux-dev",
        "FLUX.1's finest pictures, in 28 steps, with FLUX.1-Fill; both gated",
        "flux",
        Repo("black-forest-labs/FLUX.1-dev", _FLUX_WEIGHTS, size=int(33.7 * GB), gated=True),
        _FLUX_FILL,
        memory=58 * GB,
        settings={"steps": 28, "guidance": 3.5},
    ),
)


def human(size: int) -> str:
    """A size as people read it: `2.6 GB`, `3.0 MB`."""
    return f"{size / GB:.1f} GB" if size >= GB / 10 else f"{size / 1e6:.1f} MB"


def names() -> list[str]:
    return [entry.name for entry in CATALOG]


def find(name: str) -> Entry | None:
    return next((entry for entry in CATALOG if entry.name == name), None)


def holding(repo_id: str) -> Entry | None:
    """The first entry that downloads the hub repository `repo_id`."""
    return next((entry for entry in CATALOG if any(repo.id == repo_id for repo in entry.repos)), None)


def entry(name: str) -> Entry:
    found = find(name)
    if found is None:
        raise UnknownModel(f"no model {name!r} in the catalog; it has: {', '.join(names())}")
    return found


def profile_table(entry: Entry, *, with_inpaint: bool) -> dict[str, Any]:
    """The profile settings that serve `entry`: its hub id, family and settings, and its inpainting model
    with `with_inpaint` (where that is in the cache: without it, the model inpaints on its own)."""
    table: dict[str, Any] = {"name": entry.name, "model": entry.model.id, "family": entry.family, **entry.settings}
    if with_inpaint and entry.inpaint is not None:
        table["inpaint_model"] = entry.inpaint.id
    return table
