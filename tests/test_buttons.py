"""Midjourney's button grammar: every customId we emit resolves back to its action and task."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journeyd.domain.buttons import (
    PAN_DIRECTIONS,
    CustomId,
    Kind,
    buttons_for,
    format_custom_id,
    parse_custom_id,
    plan_for,
    plan_named,
)
from journeyd.domain.errors import InvalidRequest
from journeyd.domain.ids import IdGenerator, job_uuid, task_id_from_job
from journeyd.domain.lifecycle import Action, Op

JOB = "3785da15-4f70-4034-9128-f3ff1ac634fa"


def test_grid_buttons_are_u1_to_u4_reroll_and_v1_to_v4() -> None:
    buttons = buttons_for(JOB, "grid", "7")
    assert [b.text for b in buttons] == ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]
    assert buttons[0].custom_id == f"MJ::JOB::upsample::1::{JOB}"
    assert buttons[4].custom_id == f"MJ::JOB::reroll::0::{JOB}::SOLO"
    assert buttons[8].custom_id == f"MJ::JOB::variation::4::{JOB}"


def test_upscaled_image_buttons_match_midjourney() -> None:
    buttons = buttons_for(JOB, "single", "7")
    assert [b.text for b in buttons] == [
        "Upscale (Subtle)",
        "Upscale (Creative)",
        "Vary (Subtle)",
        "Vary (Strong)",
        "Vary (Region)",
        "Zoom Out 2x",
        "Zoom Out 1.5x",
        "Custom Zoom",
        "⬅️",
        "➡️",
        "⬆️",
        "⬇️",
    ]
    ids = [b.custom_id for b in buttons]
    assert ids[0] == f"MJ::JOB::upsample_v6_2x_subtle::1::{JOB}::SOLO"
    assert ids[4] == f"MJ::Inpaint::1::{JOB}::SOLO"
    assert ids[5] == f"MJ::Outpaint::50::1::{JOB}::SOLO"
    assert ids[6] == f"MJ::Outpaint::75::1::{JOB}::SOLO"
    assert ids[7] == f"MJ::CustomZoom::{JOB}"
    assert ids[8] == f"MJ::JOB::pan_left::1::{JOB}::SOLO"


@pytest.mark.parametrize(
    ("version", "tag"),
    [
        ("6", "v6_2x_subtle"),
        ("6.1", "v6_2x_subtle"),
        ("niji6", "v6_2x_subtle"),
        ("5.2", "v5_2x"),
        ("8", "v6_2x_subtle"),
    ],
)
def test_upscale_buttons_are_the_ones_clients_draw(version: str, tag: str) -> None:
    """v5 has Upscale (2x)/(4x); every later version gets v6's tags, the ones chatgpt-web matches."""
    assert buttons_for(JOB, "single", version)[0].custom_id == f"MJ::JOB::upsample_{tag}::1::{JOB}::SOLO"


def test_substrings_clients_search_for_are_present() -> None:
    """chatgpt-web-midjourney-proxy and ChatGPT-Midjourney find buttons by these substrings."""
    joined = " ".join(b.custom_id for b in buttons_for(JOB, "grid", "7") + buttons_for(JOB, "single", "6"))
    for needle in (
        ":upsample::1",
        ":variation::2",
        "reroll::0",
        "high_variation",
        "low_variation",
        ":Inpaint::1",
        "Outpaint::50",
        "Outpaint::75",
        "CustomZoom::",
        "pan_left",
        "pan_down",
        "upsample_v6_2x_subtle",
        "upsample_v6_2x_creative",
    ):
        assert needle in joined
    assert any(b.custom_id.startswith("MJ::Inpaint::1") for b in buttons_for(JOB, "single", "7"))


def test_new_api_splits_custom_ids_into_action_and_index() -> None:
    """new-api: split on '::'; if [1] == 'JOB' the action is [2] (index [3]), else [1]."""
    for button in buttons_for(JOB, "grid", "7") + buttons_for(JOB, "single", "7"):
        parts = button.custom_id.split("::")
        action = parts[2] if parts[1] == "JOB" else parts[1]
        assert action.split("_")[0] in {
            "upsample",
            "variation",
            "reroll",
            "low",
            "high",
            "Inpaint",
            "Outpaint",
            "CustomZoom",
            "pan",
        }


def test_each_button_resolves_to_its_action() -> None:
    expected = {
        "U1": (Action.UPSCALE, Op.PICK),
        "V3": (Action.VARIATION, Op.VARY_STRONG),
        "🔄": (Action.REROLL, None),
        "Upscale (Subtle)": (Action.UPSCALE, Op.UPSCALE_SUBTLE),
        "Upscale (Creative)": (Action.UPSCALE, Op.UPSCALE_CREATIVE),
        "Vary (Subtle)": (Action.VARIATION, Op.VARY_SUBTLE),
        "Vary (Strong)": (Action.VARIATION, Op.VARY_STRONG),
        "Vary (Region)": (Action.INPAINT, Op.VARY_REGION),
        "Zoom Out 2x": (Action.ZOOM, Op.ZOOM_OUT),
        "Custom Zoom": (Action.ZOOM, Op.ZOOM_OUT),
        "⬅️": (Action.PAN, Op.PAN),
    }
    by_text = {b.text: b for b in buttons_for(JOB, "grid", "7") + buttons_for(JOB, "single", "7")}
    for text, (action, op) in expected.items():
        plan = plan_for(parse_custom_id(by_text[text].custom_id))
        assert (plan.action, plan.op) == (action, op), text
    assert plan_for(parse_custom_id(by_text["V3"].custom_id)).index == 3
    assert plan_for(parse_custom_id(by_text["Zoom Out 2x"].custom_id)).args["zoom"] == 2.0
    assert plan_for(parse_custom_id(by_text["Zoom Out 1.5x"].custom_id)).args["zoom"] == 1.5
    assert plan_for(parse_custom_id(by_text["Vary (Region)"].custom_id)).modal
    assert plan_for(parse_custom_id(by_text["Custom Zoom"].custom_id)).modal
    assert plan_for(parse_custom_id(by_text["⬅️"].custom_id)).args["direction"] == "left"


def test_apimart_named_actions_plan_like_buttons() -> None:
    assert plan_named("zoom", index=None, parent_kind="single", zoom_ratio=1.2).args["zoom"] == 1.5
    assert plan_named("zoom", index=None, parent_kind="single").args["zoom"] == 2.0
    assert plan_named("high-variation", index=3, parent_kind="grid").index == 3
    assert plan_named("low-variation", index=None, parent_kind="single").op is Op.VARY_SUBTLE
    with pytest.raises(InvalidRequest, match="direction"):
        plan_named("pan", index=None, parent_kind="single", direction="sideways")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "MJ::JOB::upsample::5::" + JOB,
        "MJ::JOB::upsample::1::not-a-job",
        "MJ::JOB::explode::1::" + JOB,
        "MJ::Outpaint::60::1::" + JOB + "::SOLO",
        "MJ::JOB::pan_sideways::1::" + JOB + "::SOLO",
        "MJ::BOOKMARK::" + JOB,
    ],
)
def test_anything_outside_the_grammar_is_a_clear_400(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="not a button journeyd knows"):
        parse_custom_id(bad)


JOBS = st.uuids().map(str)
UPSCALE_TAGS = st.sampled_from(["v5_2x", "v5_4x", "v6_2x_subtle", "v6_2x_creative", "v6r1_2x_subtle", "v7_2x_creative"])


@st.composite
def custom_ids(draw: st.DrawFn) -> CustomId:
    kind = draw(st.sampled_from(list(Kind)))
    job = draw(JOBS)
    if kind in (Kind.UPSAMPLE, Kind.VARIATION):
        return CustomId(kind, job, draw(st.integers(1, 4)))
    if kind is Kind.REROLL:
        return CustomId(kind, job, 0)
    if kind is Kind.UPSCALE:
        return CustomId(kind, job, upscale=draw(UPSCALE_TAGS))
    if kind is Kind.OUTPAINT:
        return CustomId(kind, job, zoom=draw(st.sampled_from([50, 75, 100])))
    if kind is Kind.PAN:
        return CustomId(kind, job, direction=draw(st.sampled_from(PAN_DIRECTIONS)))
    if kind in (Kind.PIC_READER, Kind.PROMPT_ANALYZER):  # Midjourney's own name no job
        return CustomId(kind, "", draw(st.integers(1, 4 if kind is Kind.PIC_READER else 5)))
    if kind in (Kind.PIC_READER_ALL, Kind.PIC_READ_RETRY):
        return CustomId(kind, "")
    return CustomId(kind, job)


@settings(max_examples=500, deadline=None)
@given(custom_ids())
def test_custom_ids_round_trip(cid: CustomId) -> None:
    text = format_custom_id(cid)
    assert parse_custom_id(text) == cid
    assert format_custom_id(parse_custom_id(text)) == text
    plan_for(cid)  # every well-formed customId has a plan


def test_describe_and_shorten_buttons_are_midjourneys_and_may_name_their_job() -> None:
    job = "0b5e6f9c-1d2e-4f3a-8b7c-6d5e4f3a2b1c"
    assert parse_custom_id("MJ::Job::PicReader::3") == CustomId(Kind.PIC_READER, "", 3)
    assert parse_custom_id(f"MJ::Job::PicReader::3::{job}") == CustomId(Kind.PIC_READER, job, 3)
    assert parse_custom_id("MJ::Job::PicReader::all").kind is Kind.PIC_READER_ALL
    assert parse_custom_id("MJ::Picread::Retry").kind is Kind.PIC_READ_RETRY
    assert parse_custom_id("MJ::Job::PromptAnalyzer::5") == CustomId(Kind.PROMPT_ANALYZER, "", 5)
    for text in ("MJ::Job::PicReader::5", "MJ::Job::PromptAnalyzer::6", "MJ::Job::PicReader::0"):
        with pytest.raises(InvalidRequest):
            parse_custom_id(text)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**48 - 1), st.binary(min_size=10, max_size=10))
def test_every_button_leads_back_to_its_task(ms: int, entropy: bytes) -> None:
    task_id = IdGenerator(lambda: ms, lambda n: entropy).new()
    job = job_uuid(task_id)
    assert str(uuid.UUID(job)) == job
    assert task_id_from_job(job) == task_id
    for button in buttons_for(job, "grid", "7") + buttons_for(job, "single", "7"):
        assert task_id_from_job(parse_custom_id(button.custom_id).job) == task_id


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_arbitrary_text_never_crashes_the_parser(text: str) -> None:
    with contextlib.suppress(InvalidRequest):
        parse_custom_id(text)
