"""The tiny SD 1.5 / SDXL pipelines load both from a diffusers folder and from one original-format checkpoint.

The engine's tests rely on these fixtures, so here we prove they are real pipelines: they run, and the
single-file export loads back through diffusers' own `from_single_file` with bit-identical weights and images,
all with the network unreachable.
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
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.loaders.single_file_utils import infer_diffusers_model_type
from PIL import Image
from safetensors.torch import load_file

from tests.tiny_models import export_single_file, tiny_sd15, tiny_sdxl, write_clip_tokenizer

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


def generate(pipe: DiffusionPipeline, inpaint: bool) -> np.ndarray:
    """4 images from 4 seeded generators, 2 steps at 64x64, as float arrays."""
    extra: dict[str, Any] = {}
    if inpaint:
        pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        mask = np.zeros((64, 64), dtype=np.uint8)
        mask[16:48, 16:48] = 255
        extra = {"image": Image.fromarray(pixels), "mask_image": Image.fromarray(mask)}
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
    )
    return np.asarray(result.images)


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
