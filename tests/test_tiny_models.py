"""The tiny SD 1.5 / SDXL pipelines load both from a diffusers folder and from one original-format checkpoint.

The engine's tests rely on these fixtures, so here we prove they are real pipelines: they run, and the
single-file export loads back through diffusers' own `from_single_file` with bit-identical weights and images,
all with the network unreachable. The tiny FLUX.1 / FLUX.1-Fill pipelines (diffusers folders only) are checked
the same way, plus the img2img / inpaint pipelines the engine derives from the base with `from_pipe`.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    DiffusionPipeline,
    FluxFillPipeline,
    FluxImg2ImgPipeline,
    FluxInpaintPipeline,
    FluxPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.loaders.single_file_utils import infer_diffusers_model_type
from PIL import Image
from safetensors.torch import load_file

from tests.tiny_models import (
    export_single_file,
    tiny_flux,
    tiny_flux_fill,
    tiny_sd15,
    tiny_sdxl,
    write_clip_tokenizer,
    write_t5_tokenizer,
)

SEEDS = (0, 1, 2, 3)

# (builder, inpaint, pipeline class, what diffusers infers from the single file)
VARIANTS = {
    "sd15": (tiny_sd15, False, StableDiffusionPipeline, "v1"),
    "sd15-inpaint": (tiny_sd15, True, StableDiffusionInpaintPipeline, "inpainting"),
    "sdxl": (tiny_sdxl, False, StableDiffusionXLPipeline, "xl_base"),
    "sdxl-inpaint": (tiny_sdxl, True, StableDiffusionXLInpaintPipeline, "xl_inpaint"),
}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub: offline mode for huggingface_hub, and any socket connection fails loudly."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def image_and_mask() -> tuple[Image.Image, Image.Image]:
    """A 64x64 noise image and a mask whose white centre square is to be repainted."""
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[16:48, 16:48] = 255
    return Image.fromarray(pixels), Image.fromarray(mask)


def generate(pipe: DiffusionPipeline, inpaint: bool, **kwargs: Any) -> np.ndarray:
    """4 images from 4 seeded generators, 2 steps at 64x64, as float arrays; `kwargs` go to the pipeline call."""
    extra: dict[str, Any] = {}
    if inpaint:
        image, mask = image_and_mask()
        extra = {"image": image, "mask_image": mask}
    pipe.set_progress_bar_config(disable=True)
    result = pipe(
        prompt="lower newer",
        num_inference_steps=2,
        height=64,
        width=64,
        num_images_per_prompt=len(SEEDS),
        generator=[torch.Generator().manual_seed(seed) for seed in SEEDS],
        output_type="np",
        **extra,
        **kwargs,
    )
    return np.asarray(result.images)


def assert_four_images(images: np.ndarray) -> None:
    assert images.shape == (4, 64, 64, 3)
    assert np.isfinite(images).all()
    assert not np.array_equal(images[0], images[1]), "different seeds should give different images"


def test_tokenizer_is_local(tmp_path: Path) -> None:
    tokenizer = write_clip_tokenizer(tmp_path)
    assert (tmp_path / "vocab.json").is_file() and (tmp_path / "merges.txt").is_file()
    assert tokenizer.model_max_length == 77
    ids = tokenizer("lower newer", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tokenizer.bos_token_id


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_folder_and_single_file_load_identically(variant: str, tmp_path: Path) -> None:
    build, inpaint, pipeline_class, model_type = VARIANTS[variant]
    folder = build(tmp_path / "diffusers", inpaint=inpaint)

    from_folder = pipeline_class.from_pretrained(folder, local_files_only=True)
    images = generate(from_folder, inpaint)
    assert images.shape == (4, 64, 64, 3)
    assert np.isfinite(images).all()
    assert not np.array_equal(images[0], images[1]), "different seeds should give different images"

    target = export_single_file(folder, tmp_path / "model.safetensors")
    checkpoint = load_file(target)
    assert infer_diffusers_model_type(checkpoint) == model_type
    assert "first_stage_model.decoder.up.0.block.0.conv1.weight" in checkpoint
    assert "model.diffusion_model.input_blocks.1.0.in_layers.0.weight" in checkpoint
    text_prefix = "conditioner.embedders.0." if "sdxl" in variant else "cond_stage_model."
    assert f"{text_prefix}transformer.text_model.embeddings.position_embedding.weight" in checkpoint

    from_file = pipeline_class.from_single_file(str(target), config=str(folder), local_files_only=True)
    assert type(from_file) is pipeline_class
    names = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if "sdxl" in variant else [])
    for name in names:
        expected = getattr(from_folder, name).state_dict()
        actual = getattr(from_file, name).state_dict()
        assert actual.keys() == expected.keys(), name
        unequal = [key for key in expected if not torch.equal(actual[key], expected[key])]
        assert not unequal, f"{name}: {unequal[:5]}"

    assert np.array_equal(generate(from_file, inpaint), images)


# --- FLUX.1 ------------------------------------------------------------------------------------------------------

# The T5 tokenizer pads every prompt to max_sequence_length (512 by default); keep the tiny runs short.
MAX_SEQUENCE_LENGTH = 48

# (builder, pipeline class, is Fill, transformer in/out channels)
FLUX_VARIANTS = {
    "flux": (tiny_flux, FluxPipeline, False, (8, 8)),
    "flux-fill": (tiny_flux_fill, FluxFillPipeline, True, (20, 8)),
}


def flux_generate(pipe: DiffusionPipeline, fill: bool, **kwargs: Any) -> np.ndarray:
    return generate(pipe, fill, max_sequence_length=MAX_SEQUENCE_LENGTH, **kwargs)


def test_t5_tokenizer_is_local(tmp_path: Path) -> None:
    tokenizer = write_t5_tokenizer(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = tokenizer("lower newer", padding="max_length", max_length=MAX_SEQUENCE_LENGTH, truncation=True).input_ids
    assert ids[:3] == [tokenizer.convert_tokens_to_ids("▁lower"), tokenizer.convert_tokens_to_ids("▁newer"), 1]
    assert ids[3:] == [0] * (MAX_SEQUENCE_LENGTH - 3)
    assert tokenizer.unk_token_id not in tokenizer("a tiny cat").input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "lower newer"


@pytest.mark.parametrize("variant", list(FLUX_VARIANTS))
def test_flux_folder_loads_and_runs(variant: str, tmp_path: Path) -> None:
    build, pipeline_class, fill, channels = FLUX_VARIANTS[variant]
    pipe = pipeline_class.from_pretrained(build(tmp_path / variant), local_files_only=True)
    assert type(pipe) is pipeline_class
    transformer = pipe.transformer.config
    assert (transformer.in_channels, transformer.out_channels) == channels
    assert transformer.guidance_embeds
    assert pipe.vae_scale_factor == 1
    prompt_ids = pipe.tokenizer_2("lower newer", padding="max_length", max_length=MAX_SEQUENCE_LENGTH).input_ids
    assert len(prompt_ids) == MAX_SEQUENCE_LENGTH
    assert max(prompt_ids) < pipe.text_encoder_2.config.vocab_size

    images = flux_generate(pipe, fill)
    assert_four_images(images)
    assert np.array_equal(flux_generate(pipe, fill), images), "same seeds should repeat"
    # FLUX.1-dev / Fill-dev style: guidance_scale is an input of the transformer (guidance embedding), not CFG.
    assert not np.array_equal(flux_generate(pipe, fill, guidance_scale=1.0), images)


def test_flux_from_pipe_img2img_and_inpaint(tmp_path: Path) -> None:
    base = FluxPipeline.from_pretrained(tiny_flux(tmp_path / "flux"), local_files_only=True)
    image, mask = image_and_mask()
    for pipeline_class, extra in (
        (FluxImg2ImgPipeline, {"image": image}),
        (FluxInpaintPipeline, {"image": image, "mask_image": mask}),
    ):
        derived = pipeline_class.from_pipe(base, dtype=base.dtype)
        assert type(derived) is pipeline_class
        assert derived.transformer is base.transformer and derived.vae is base.vae, "from_pipe shares the weights"
        assert_four_images(flux_generate(derived, False, strength=0.9, **extra))


def test_flux_true_cfg_and_schnell_style_guidance(tmp_path: Path) -> None:
    base = FluxPipeline.from_pretrained(tiny_flux(tmp_path / "dev"), local_files_only=True)
    images = flux_generate(base, False)
    # FluxPipeline's true CFG needs a negative prompt AND true_cfg_scale > 1 (two transformer passes per step).
    assert np.array_equal(flux_generate(base, False, negative_prompt="a", true_cfg_scale=1.0), images)
    assert not np.array_equal(flux_generate(base, False, negative_prompt="a", true_cfg_scale=4.0), images)

    folder = tiny_flux(tmp_path / "schnell", guidance_embeds=False)
    schnell = FluxPipeline.from_pretrained(folder, local_files_only=True)
    assert not schnell.transformer.config.guidance_embeds
    images = flux_generate(schnell, False)
    assert_four_images(images)
    assert np.array_equal(flux_generate(schnell, False, guidance_scale=1.0), images), "no guidance embedding"
