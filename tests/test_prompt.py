"""The Midjourney prompt parser: flags, weights, image URLs, overrides."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journeyd.domain.prompt import (
    MAX_PROMPT_CHARS,
    QUALITIES,
    PromptError,
    PromptSpec,
    WeightedPart,
    parse_prompt,
    with_overrides,
)


def test_a_full_prompt_is_split_into_its_parts() -> None:
    spec = parse_prompt(
        "https://example.com/a.png <https://example.com/b.jpg> a red fox in snow --ar 16:9 --no trees, cars "
        "--chaos 20 --s 250 --v 6.1 --q .5 --style raw --seed 42 --tile --zoom 1.5 --fast"
    )
    assert spec.image_urls == ("https://example.com/a.png", "https://example.com/b.jpg")
    assert spec.text == "a red fox in snow"
    assert spec.aspect == (16, 9)
    assert spec.no == ("trees", "cars")
    assert (spec.chaos, spec.stylize, spec.version, spec.quality) == (20, 250, "6.1", 0.5)
    assert (spec.style, spec.seed, spec.tile, spec.zoom, spec.speed) == ("raw", 42, True, 1.5, "fast")


def test_aliases_and_the_phone_em_dash_are_understood() -> None:
    spec = parse_prompt("castle —aspect 2:3 --c 5 --stylize 50 --version 5.0 --quality 2 --raw")
    assert spec.aspect == (2, 3)
    assert (spec.chaos, spec.stylize, spec.version, spec.quality, spec.style) == (5, 50, "5", 2.0, "raw")


def test_niji_without_a_number_means_the_current_niji() -> None:
    spec = parse_prompt("anime girl --niji")
    assert spec.niji == "6" and spec.version is None
    assert spec.model_version == "niji6"
    assert parse_prompt("x --niji 5").model_version == "niji5"
    assert parse_prompt("x").model_version == "7"


def test_weights_split_the_text_and_negative_weights_become_negative_terms() -> None:
    spec = parse_prompt("hot dog::2 cat::-0.5 bun --no mustard")
    assert spec.parts == (WeightedPart("hot dog", 2.0), WeightedPart("cat", -0.5), WeightedPart("bun", 1.0))
    assert spec.negative == "mustard, cat"
    assert parse_prompt("space::ship").parts == (WeightedPart("space", 1.0), WeightedPart("ship", 1.0))


def test_unknown_flags_are_kept_verbatim_not_dropped() -> None:
    spec = parse_prompt("a cat --oref https://x.test/s.png --ow 50 --ar 1:1 --p")
    assert spec.extra_flags == ("--oref https://x.test/s.png", "--ow 50", "--p")
    assert "--oref https://x.test/s.png --ow 50 --p" in spec.render()
    assert parse_prompt(spec.render()) == spec


def test_style_and_character_references_with_their_weights() -> None:
    spec = parse_prompt("a cat --sref https://x.test/s.png <https://x.test/t.jpg> --sw 300 --cref https://x.test/c.png")
    assert spec.style_refs == ("https://x.test/s.png", "https://x.test/t.jpg") and spec.style_weight == 300
    assert spec.character_refs == ("https://x.test/c.png",) and spec.character_weight is None  # default 100
    assert spec.text == "a cat" and spec.extra_flags == ()
    assert (
        spec.render() == "a cat --sref https://x.test/s.png https://x.test/t.jpg --sw 300 --cref https://x.test/c.png"
    )
    assert parse_prompt(spec.render()) == spec
    assert parse_prompt("x --cref https://x.test/c.png --cw 0").character_weight == 0
    for bad, needle in [
        ("x --sref 12345", "image URLs"),  # Midjourney's style codes name its own styles
        ("x --sw 100", "add --sref"),
        ("x --cw 50", "add --cref"),
        ("x --sref https://a.test/1.png --sw 1001", "--sw must be from 0 to 1000"),
        ("x --cref https://a.test/1.png --cw 101", "--cw must be from 0 to 100"),
        ("x --sref " + " ".join(f"https://a.test/{i}.png" for i in range(6)), "limit is 5"),
        ("x --sref", "needs a value"),
    ]:
        with pytest.raises(PromptError, match=re.escape(needle)):
            parse_prompt(bad)


def test_double_dash_inside_words_is_text() -> None:
    assert parse_prompt("a well--known place -- at night").text == "a well--known place -- at night"


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("x --ar 16x", "--ar must look like 16:9"),
        ("x --ar 0:1", "at least 1"),
        ("x --ar 20:1", "too extreme"),
        ("x --chaos 101", "--chaos must be from 0 to 100"),
        ("x --s lots", "--s takes a whole number"),
        ("x --seed -1", "--seed must be from 0"),
        ("x --q 3", "--q must be one of"),
        ("x --v seven", "--v takes a version number"),
        ("x --v 6 --niji 6", "either --v or --niji"),
        ("x --tile please", "--tile takes no value"),
        ("x --zoom 3", "--zoom must be from 1 to 2"),
        ("x --ar 1:1 --ar 2:3", "more than once"),
        ("x --seed", "--seed needs a value"),
        ("x --fast --fast", "more than once"),
    ],
)
def test_bad_flags_get_a_message_naming_the_flag(prompt: str, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        parse_prompt(prompt)


def test_prompts_over_the_limit_are_refused() -> None:
    parse_prompt("a" * MAX_PROMPT_CHARS)
    with pytest.raises(PromptError, match="8000"):
        parse_prompt("a" * (MAX_PROMPT_CHARS + 1))


def test_structured_fields_override_flags() -> None:
    spec = parse_prompt("a boat --ar 1:1 --seed 1 --no sails --v 6")
    spec = with_overrides(spec, aspect="16:9", seed=7, no="people, birds", version="niji 6", stylize=None)
    assert spec.aspect == (16, 9) and spec.seed == 7
    assert spec.no == ("people", "birds")
    assert spec.niji == "6" and spec.version is None
    with pytest.raises(PromptError, match="size"):
        with_overrides(spec, aspect="wide")
    with pytest.raises(PromptError, match="chaos"):
        with_overrides(spec, chaos=500)


def test_a_size_in_pixels_is_reduced_to_its_aspect_ratio_and_steps_and_cfg_are_kept() -> None:
    spec = with_overrides(parse_prompt("a boat --ar 1:1"), aspect=(1024, 768), steps=20, guidance=6.5)
    assert (spec.aspect, spec.steps, spec.guidance) == ((4, 3), 20, 6.5)
    assert spec.render() == "a boat --ar 4:3 --steps 20 --cfg 6.5"
    assert parse_prompt("a boat --steps 12 --cfg 0").steps == 12
    assert with_overrides(parse_prompt("x"), aspect=(1920, 1080)).aspect == (16, 9)
    for size, problem in (((0, 768), "from 1 to 16384"), ((20000, 768), "from 1 to 16384"), ((4000, 100), "extreme")):
        with pytest.raises(PromptError, match=problem):
            with_overrides(spec, aspect=size)
    with pytest.raises(PromptError, match="--steps must be from 1 to 150"):
        with_overrides(spec, steps=0)
    with pytest.raises(PromptError, match="--cfg must be from 0 to 30"):
        with_overrides(spec, guidance=31)


def test_a_modal_prompt_inherits_the_parameters_it_does_not_set() -> None:
    parent = parse_prompt("a cabin --ar 3:2 --v 6.1 --s 400 --no snow")
    region = parse_prompt("a red door --no windows").inherit(parent)
    assert region.text == "a red door"
    assert (region.aspect, region.version, region.stylize, region.no) == ((3, 2), "6.1", 400, ("windows",))
    assert parse_prompt("door --niji").inherit(parent).version is None


# --- properties -----------------------------------------------------------------------------------
WORD = st.text(alphabet=string.ascii_letters + string.digits + ",.'!?éü", min_size=1, max_size=8)
TEXT = st.lists(WORD, max_size=6).map(" ".join)
URL = st.from_regex(r"https://[a-z]{1,8}\.test/[a-z0-9]{1,8}\.png", fullmatch=True)
TERM = st.lists(st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6), min_size=1, max_size=3).map(" ".join)
VERSION = st.sampled_from(["1", "4", "5", "5.2", "6", "6.1", "7", "8"])
EXTRA = st.sampled_from(["--p", "--oref https://o.test/x.png", "--exp 25"])


@st.composite
def specs(draw: st.DrawFn) -> PromptSpec:
    niji = draw(st.none() | st.sampled_from(["5", "6"]))
    return PromptSpec(
        text=draw(TEXT),
        image_urls=tuple(draw(st.lists(URL, max_size=2))),
        aspect=draw(st.none() | st.tuples(st.integers(1, 8), st.integers(1, 8))),
        seed=draw(st.none() | st.integers(0, 2**32 - 1)),
        no=tuple(draw(st.lists(TERM, max_size=3))),
        chaos=draw(st.none() | st.integers(0, 100)),
        stylize=draw(st.none() | st.integers(0, 1000)),
        version=None if niji else draw(st.none() | VERSION),
        niji=niji,
        quality=draw(st.none() | st.sampled_from(QUALITIES)),
        style=draw(st.none() | st.sampled_from(["raw", "cute", "4a"])),
        tile=draw(st.booleans()),
        zoom=draw(st.none() | st.sampled_from([1.0, 1.25, 1.5, 2.0])),
        weird=draw(st.none() | st.integers(0, 3000)),
        image_weight=draw(st.none() | st.sampled_from([0.0, 0.5, 1.75, 3.0])),
        speed=draw(st.none() | st.sampled_from(["relax", "fast", "turbo"])),
        steps=draw(st.none() | st.integers(1, 150)),
        guidance=draw(st.none() | st.sampled_from([0.0, 1.0, 3.5, 7.25, 30.0])),
        style_refs=(style_refs := tuple(draw(st.lists(URL, max_size=2)))),
        style_weight=draw(st.none() | st.integers(0, 1000)) if style_refs else None,
        character_refs=(character_refs := tuple(draw(st.lists(URL, max_size=2)))),
        character_weight=draw(st.none() | st.integers(0, 100)) if character_refs else None,
        extra_flags=tuple(draw(st.lists(EXTRA, max_size=2, unique=True))),
    )


@settings(max_examples=300, deadline=None)
@given(specs())
def test_rendering_then_parsing_gives_the_same_spec(spec: PromptSpec) -> None:
    assert parse_prompt(spec.render()) == spec


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_or_gets_a_prompt_error(text: str) -> None:
    try:
        spec = parse_prompt(text)
    except PromptError as error:
        assert error.message
        return
    # whatever parsed renders to something that parses back to the same thing
    assert parse_prompt(spec.render()) == spec


@settings(max_examples=200, deadline=None)
@given(TEXT, st.lists(st.sampled_from(["--foo", "--bar 1", "--baz x y"]), min_size=1, max_size=3, unique=True))
def test_unknown_flags_survive_parsing(text: str, flags: list[str]) -> None:
    spec = parse_prompt(" ".join([text, *flags]))
    assert spec.extra_flags == tuple(flags)
