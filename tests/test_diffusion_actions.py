"""The diffusers engine's Describe, Blend, Shorten and image prompts, on tiny random models the tests
build: an SD 1.5 / SDXL pipeline, IP-Adapters with their CLIP image encoder, and a BLIP captioner, all
loaded through the engine's real loading code from folders, offline."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from journeyd.domain.errors import InvalidRequest
from journeyd.domain.prompt import PromptSpec, parse_prompt
from journeyd.engines.diffusion import DiffusionEngine, ModelLoadError, ProfileError, load_profiles
from journeyd.engines.diffusion.describing import described_prompts
from journeyd.engines.diffusion.looks import Looks, looks_of
from journeyd.engines.diffusion.profiles import ProfileRules, load_versions, profile_from
from tests.tiny_models import TINY_IP_ADAPTER, tiny_blip, tiny_flux, tiny_ip_adapter, tiny_sd15, tiny_sdxl

FAST = {"size": 64, "steps": 3}
SEEDS = [7, 8, 9, 10]
STYLE_ADAPTER = "ip-adapter-style_tiny.safetensors"


def _quiet(done: int, total: int, preview: np.ndarray | None = None) -> None:
    pass


def _picture(seed: int, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """A smooth random picture (blurred noise), as unlike the next seed's as pictures get."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
    return cv2.resize(coarse, size, interpolation=cv2.INTER_CUBIC)


pytestmark = pytest.mark.usefixtures("hub_offline")  # only the cache is read: nothing is downloaded


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("actions")
    sd15 = tiny_sd15(root / "sd15")
    tiny_ip_adapter(sd15, root / "ip-sd15")
    tiny_ip_adapter(sd15, root / "ip-sd15", weight_name=STYLE_ADAPTER, seed=1)
    return {"sd15": sd15, "ip-sd15": root / "ip-sd15", "blip": tiny_blip(root / "blip"), "root": root}


def _adapter(folder: Path, weight_name: str = TINY_IP_ADAPTER) -> dict[str, str]:
    return {"model": str(folder), "subfolder": "models", "weight_name": weight_name}


def _settings(folders: dict[str, Path]) -> dict[str, object]:
    """An SD 1.5 profile with an image and a style IP-Adapter (no face one) and a captioner."""
    return {
        **FAST,
        "captioner": str(folders["blip"]),
        "ip_adapter": _adapter(folders["ip-sd15"]),
        "ip_adapter_style": _adapter(folders["ip-sd15"], STYLE_ADAPTER),
    }


@pytest.fixture(scope="module")
def steered(folders: dict[str, Path]) -> DiffusionEngine:
    return DiffusionEngine.load(load_profiles(str(folders["sd15"]), extra=_settings(folders)), dtype="float32")


@pytest.fixture(scope="module")
def bare(folders: dict[str, Path]) -> DiffusionEngine:
    """The same model with neither adapters nor captioner."""
    return DiffusionEngine.load(load_profiles(str(folders["sd15"]), extra=FAST), dtype="float32")


# --- Describe ---------------------------------------------------------------------------------------------------


def test_describe_gives_four_distinct_prompts_and_the_seed_decides_the_caption(steered: DiffusionEngine) -> None:
    image = _picture(1)
    reports: list[tuple[int, int]] = []
    prompts = steered.describe(image, 5, lambda done, total, preview=None: reports.append((done, total)))
    assert len(prompts) == 4 and len(set(prompts)) == 4 and all(prompts)
    caption = prompts[0]
    assert all(p.startswith(caption) for p in prompts[1:3])  # caption + style, caption + light/composition
    assert "tones" in prompts[1] and "light" in prompts[2] and "framing" in prompts[2]
    assert len(prompts[3]) < len(caption)  # the shortened one
    assert reports[-1] == (2, 2)
    assert steered.describe(image, 5, _quiet) == prompts  # the same seed reads the same
    assert steered.describe(image, 6, _quiet)[0] != caption  # Retry, a new seed, samples another caption


def test_the_captioner_loads_on_the_first_describe_and_a_missing_one_is_named(folders: dict[str, Path]) -> None:
    settings = {**FAST, "captioner": str(folders["root"] / "no-such-blip")}
    engine = DiffusionEngine.load(load_profiles(str(folders["sd15"]), extra=settings), dtype="float32")
    engine.check_describe()  # configured: accepted at submit; the model is read when a describe runs
    with pytest.raises(ModelLoadError, match="no-such-blip"):
        engine.describe(_picture(1), 1, _quiet)


def test_the_four_prompts_differ_even_for_a_one_word_caption() -> None:
    looks = looks_of(_picture(3))
    for caption in ("dog", "a dog", "", "dog, teal tones"):
        prompts = described_prompts(caption, looks)
        assert len(set(prompts)) == 4, prompts


def test_looks_are_measured_from_the_pixels() -> None:
    dark_blue = np.zeros((48, 96, 3), np.uint8)
    dark_blue[..., 2] = 90
    bright_red = np.full((96, 48, 3), 235, np.uint8)
    bright_red[..., 0] = 255
    bright_red[..., 1:] = 120
    horizon = np.full((64, 64, 3), 200, np.uint8)
    horizon[45:] = 40
    assert looks_of(dark_blue) == Looks("blue tones", "vivid colours", looks_of(dark_blue).light, "wide framing")
    assert "low-key" in looks_of(dark_blue).light and "cool" in looks_of(dark_blue).light
    assert looks_of(bright_red).palette == "red tones" and "tall framing" in looks_of(bright_red).composition
    assert "warm" in looks_of(bright_red).light
    assert looks_of(horizon).palette == "grey tones" and "low horizon" in looks_of(horizon).composition


# --- Blend ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 5])
def test_blend_returns_four_pictures_of_the_size_that_the_images_decide(count: int, steered: DiffusionEngine) -> None:
    images = [_picture(seed) for seed in range(count)]
    size = (64, 48)
    blended = steered.blend(images, PromptSpec(), size, SEEDS, _quiet)
    assert len(blended) == 4 and all(image.shape == (48, 64, 3) for image in blended)
    assert len({image.tobytes() for image in blended}) == 4
    others = steered.blend([_picture(seed + 50) for seed in range(count)], PromptSpec(), size, SEEDS, _quiet)
    assert not np.array_equal(blended[0], others[0])
    # the images' embeddings are averaged: a mix, whatever order they come in
    shuffled = steered.blend(images[::-1], PromptSpec(), size, SEEDS, _quiet)
    assert np.abs(shuffled[0].astype(int) - blended[0]).max() <= 2


def test_a_blend_on_a_model_without_an_ip_adapter_is_refused_at_submit(
    bare: DiffusionEngine, folders: dict[str, Path]
) -> None:
    rules = ProfileRules(load_versions(str(folders["sd15"]), extra=FAST))  # an API node's, no model read
    for refuse in (bare.check_blend, rules.check_blend):
        with pytest.raises(InvalidRequest, match=r"no IP-Adapter.*ip_adapter"):
            refuse(PromptSpec())
    for refuse in (bare.check_describe, rules.check_describe):
        with pytest.raises(InvalidRequest, match="captioner"):
            refuse()
    with pytest.raises(InvalidRequest):
        bare.blend([_picture(1), _picture(2)], PromptSpec(), (64, 64), SEEDS, _quiet)


# --- image prompts and references -------------------------------------------------------------------------------


def test_image_weight_scales_the_image_prompt_and_zero_draws_what_no_image_draws(steered: DiffusionEngine) -> None:
    image, seeds = _picture(4), SEEDS[:2]
    plain = steered.generate(parse_prompt("lower newer"), (64, 64), seeds, _quiet)
    at_zero = steered.generate(parse_prompt("lower newer --iw 0"), (64, 64), seeds, _quiet, [image])
    at_one = steered.generate(parse_prompt("lower newer --iw 1"), (64, 64), seeds, _quiet, [image])
    at_two = steered.generate(parse_prompt("lower newer --iw 2"), (64, 64), seeds, _quiet, [image])
    assert np.array_equal(at_zero[0], plain[0])
    assert not np.array_equal(at_two[0], plain[0]) and not np.array_equal(at_two[0], at_one[0])
    assert np.array_equal(
        steered.generate(parse_prompt("lower newer --iw 2"), (64, 64), seeds, _quiet, [image])[0], at_two[0]
    )
    # the adapters are off again for calls without images: the plain picture is unchanged
    assert np.array_equal(steered.generate(parse_prompt("lower newer"), (64, 64), seeds, _quiet)[0], plain[0])


def test_an_image_prompt_without_an_adapter_still_starts_the_picture(bare: DiffusionEngine) -> None:
    seeds = SEEDS[:2]
    plain = bare.generate(parse_prompt("lower newer"), (64, 64), seeds, _quiet)
    started = bare.generate(parse_prompt("lower newer"), (64, 64), seeds, _quiet, [_picture(4)])
    assert not np.array_equal(started[0], plain[0])


def test_a_style_reference_steers_through_the_style_adapter(steered: DiffusionEngine) -> None:
    seeds, prompt = SEEDS[:2], parse_prompt("lower newer")
    plain = steered.generate(prompt, (64, 64), seeds, _quiet)
    styled = steered.generate(prompt, (64, 64), seeds, _quiet, style_refs=[_picture(5)])
    assert not np.array_equal(styled[0], plain[0])
    assert steered.batch_key(prompt) is not None


def test_references_without_their_adapter_are_refused_naming_the_setting(
    steered: DiffusionEngine, bare: DiffusionEngine
) -> None:
    prompt = parse_prompt("lower newer")
    with pytest.raises(InvalidRequest, match=r"--cref: .*no face IP-Adapter.*ip_adapter_face"):
        steered.generate(prompt, (64, 64), SEEDS, _quiet, character_refs=[_picture(1)])
    with pytest.raises(InvalidRequest, match=r"--sref: .*no style IP-Adapter.*ip_adapter_style"):
        bare.generate(prompt, (64, 64), SEEDS, _quiet, style_refs=[_picture(1)])


def test_sref_and_cref_in_the_prompt_are_refused_at_submit_where_no_adapter_serves_them(
    steered: DiffusionEngine, bare: DiffusionEngine, folders: dict[str, Path]
) -> None:
    sref = parse_prompt("a cat --sref https://example.com/style.png")
    cref = parse_prompt("a cat --cref https://example.com/face.png")
    steered.check(sref)
    rules = ProfileRules(load_versions(str(folders["sd15"]), extra=FAST))
    for check in (bare.check, rules.check):
        with pytest.raises(InvalidRequest, match=r"--sref: .*ip_adapter_style"):
            check(sref)
    with pytest.raises(InvalidRequest, match=r"--cref: .*ip_adapter_face"):
        steered.check(cref)
    assert steered.batch_key(sref) is None
    # --sw scales the style adapter: 0 draws what no reference draws
    seeds, style = SEEDS[:2], [_picture(5)]
    plain = steered.generate(parse_prompt("a cat"), (64, 64), seeds, _quiet)
    drawn = {
        weight: steered.generate(
            parse_prompt(f"a cat --sref https://e.com/s.png --sw {weight}"), (64, 64), seeds, _quiet, style_refs=style
        )[0]
        for weight in (0, 100, 300)
    }
    assert np.array_equal(drawn[0], plain[0])
    assert not np.array_equal(drawn[100], plain[0]) and not np.array_equal(drawn[300], drawn[100])


# --- Shorten ----------------------------------------------------------------------------------------------------


def test_shorten_weighs_each_phrase_in_prompt_order_and_offers_five_shorter_prompts(steered: DiffusionEngine) -> None:
    text = "a red fox, in deep snow, at dusk, oil painting, highly detailed, trending"
    shortened = steered.shorten(parse_prompt(text + " --ar 3:2"))
    phrases = [phrase for phrase, _ in shortened.weights]
    assert phrases == ["a red fox", "in deep snow", "at dusk", "oil painting", "highly detailed", "trending"]
    weights = [weight for _, weight in shortened.weights]
    assert max(weights) == 1.0 and all(0.0 <= weight <= 1.0 for weight in weights) and len(set(weights)) > 1
    prompts = shortened.prompts
    assert len(prompts) == 5 and len(set(prompts)) == 5 and all(len(p) < len(text) for p in prompts)
    top = phrases[weights.index(1.0)]
    assert all(p.startswith(top) for p in prompts)  # most important first
    assert len(prompts[0].split(", ")) == len(phrases) - 1 and prompts[-1] == top


def test_shorten_takes_a_short_prompt_word_by_word_and_refuses_one_too_short(
    steered: DiffusionEngine, folders: dict[str, Path]
) -> None:
    shortened = steered.shorten(parse_prompt("lower newer wider"))
    assert [word for word, _ in shortened.weights] == ["lower", "newer", "wider"]
    assert len(set(shortened.prompts)) == 5
    rules = ProfileRules(load_versions(str(folders["sd15"]), extra=FAST))  # an API node's: refused at submit
    for text in ("lower newer", "low low low low", "low, low, newer"):
        for refuse in (steered.shorten, steered.check_shorten, rules.check_shorten):
            with pytest.raises(InvalidRequest, match="shorten: the prompt needs at least 3 different words"):
                refuse(parse_prompt(text))
    rules.check_shorten(parse_prompt("low, low, newer, wider"))
    assert len(set(steered.shorten(parse_prompt("low, low, newer, wider")).prompts)) == 5


# --- configuration ----------------------------------------------------------------------------------------------


def test_adapter_settings_are_checked_at_start_up(folders: dict[str, Path]) -> None:
    base = {"model": str(folders["sd15"]), **FAST}
    with pytest.raises(ProfileError, match="ip_adapter has no weight_name"):
        profile_from({**base, "ip_adapter": {"model": "h94/IP-Adapter"}})
    with pytest.raises(ProfileError, match="unknown setting scale"):
        profile_from({**base, "ip_adapter": {**_adapter(folders["ip-sd15"]), "scale": 2}})
    with pytest.raises(ProfileError, match="not flux"):
        profile_from({"model": "black-forest-labs/FLUX.1-dev", "family": "flux", "ip_adapter": _adapter(Path("x"))})
    with pytest.raises(ProfileError, match="one image encoder"):
        profile_from(
            {
                **base,
                "ip_adapter": _adapter(folders["ip-sd15"]),
                "ip_adapter_face": {**_adapter(Path("y")), "image_encoder": "enc"},
            }
        )
    missing = load_profiles(
        str(folders["sd15"]), extra={**FAST, "ip_adapter": _adapter(folders["ip-sd15"], "gone.safetensors")}
    )
    with pytest.raises(ModelLoadError, match=r"IP-Adapter.*gone.safetensors"):
        DiffusionEngine.load(missing, dtype="float32")


def test_sdxl_blends_takes_image_prompts_and_shortens(tmp_path: Path) -> None:
    sdxl = tiny_sdxl(tmp_path / "sdxl")
    tiny_ip_adapter(sdxl, tmp_path / "ip-sdxl")
    engine = DiffusionEngine.load(
        load_profiles(str(sdxl), extra={**FAST, "ip_adapter": _adapter(tmp_path / "ip-sdxl")}), dtype="float32"
    )
    seeds = SEEDS[:2]
    blended = engine.blend([_picture(1), _picture(2)], PromptSpec(), (64, 64), seeds, _quiet)
    assert len(blended) == 2 and blended[0].shape == (64, 64, 3)
    plain = engine.generate(parse_prompt("lower newer"), (64, 64), seeds, _quiet)
    at_zero = engine.generate(parse_prompt("lower newer --iw 0"), (64, 64), seeds, _quiet, [_picture(3)])
    at_two = engine.generate(parse_prompt("lower newer --iw 2"), (64, 64), seeds, _quiet, [_picture(3)])
    assert np.array_equal(at_zero[0], plain[0]) and not np.array_equal(at_two[0], plain[0])
    shortened = engine.shorten(parse_prompt("lower, newer, wider, lowest"))
    assert len(shortened.weights) == 4 and len(set(shortened.prompts)) == 5


def test_flux_shortens_with_its_clip_and_t5_encoders_and_refuses_a_blend(tmp_path: Path) -> None:
    flux = DiffusionEngine.load(
        load_profiles(str(tiny_flux(tmp_path / "flux")), extra={**FAST, "text_tokens": 16}), dtype="float32"
    )
    shortened = flux.shorten(parse_prompt("a lower wall, newer paint, wider door, at dusk"))
    assert [phrase for phrase, _ in shortened.weights] == ["a lower wall", "newer paint", "wider door", "at dusk"]
    assert max(weight for _, weight in shortened.weights) == 1.0 and len(set(shortened.prompts)) == 5
    with pytest.raises(InvalidRequest, match=r"blend: .*no IP-Adapter"):
        flux.check_blend(PromptSpec())
