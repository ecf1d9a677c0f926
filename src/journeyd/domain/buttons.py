"""Midjourney's buttons: the customId grammar, the button sets, and what pressing one does.

Clients find buttons by substrings of `customId` (`:upsample::1`, `:Inpaint::1`, `Outpaint::50`,
`pan_left`, ...) and new-api splits them on `::`, so the grammar is reproduced exactly. The job
part is the task's id as a UUID (see `ids.job_uuid`), so every customId resolves back to its task.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from journeyd.domain.errors import InvalidRequest
from journeyd.domain.lifecycle import Action, Op

# "describe": an image and the four prompts written for it; "shorten": a prompt's analysis, no image
ResultKind = Literal["grid", "single", "describe", "shorten"]
PAN_DIRECTIONS = ("left", "right", "up", "down")
PAN_EMOJI = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}
ZOOM_PERCENT = {50: 2.0, 75: 1.5, 100: 1.0}  # Outpaint::50 is Zoom Out 2x, ::75 is 1.5x, ::100 Make Square


class Kind(StrEnum):
    UPSAMPLE = "upsample"
    VARIATION = "variation"
    REROLL = "reroll"
    UPSCALE = "upscale"  # Upscale (Subtle) / (Creative), v5 Upscale (2x) / (4x)
    LOW_VARIATION = "low_variation"
    HIGH_VARIATION = "high_variation"
    INPAINT = "inpaint"
    OUTPAINT = "outpaint"
    CUSTOM_ZOOM = "custom_zoom"
    PAN = "pan"
    PIC_READER = "pic_reader"  # after /describe: imagine prompt N
    PIC_READER_ALL = "pic_reader_all"  # 🎉Imagine all: imagine each of the four
    PIC_READ_RETRY = "pic_read_retry"  # describe the image again
    PROMPT_ANALYZER = "prompt_analyzer"  # after /shorten: imagine shortened prompt N


@dataclass(frozen=True)
class CustomId:
    kind: Kind
    job: str  # "": Midjourney's describe and shorten buttons name no job; they are pressed with the task's id
    index: int = 1
    upscale: str | None = None  # what follows "upsample_": "v7_2x_subtle", "v5_4x", ...
    zoom: int | None = None  # Outpaint percentage: 50, 75 or 100
    direction: str | None = None  # pan direction

    def __str__(self) -> str:
        return format_custom_id(self)


@dataclass(frozen=True)
class Button:
    custom_id: str
    label: str
    emoji: str = ""
    style: int = 2

    @property
    def text(self) -> str:
        """What a person sees on the button: the label, or the emoji when there is no label."""
        return self.label or self.emoji


_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UPSCALE_TAG = r"v\d{1,2}(?:r\d)?_(?:2x|4x)(?:_(?:subtle|creative))?"
_GRAMMAR = [
    (Kind.UPSAMPLE, re.compile(rf"MJ::JOB::upsample::(?P<index>[1-4])::(?P<job>{_UUID})")),
    (Kind.VARIATION, re.compile(rf"MJ::JOB::variation::(?P<index>[1-4])::(?P<job>{_UUID})")),
    (Kind.REROLL, re.compile(rf"MJ::JOB::reroll::0::(?P<job>{_UUID})::SOLO")),
    (Kind.UPSCALE, re.compile(rf"MJ::JOB::upsample_(?P<upscale>{_UPSCALE_TAG})::1::(?P<job>{_UUID})::SOLO")),
    (Kind.LOW_VARIATION, re.compile(rf"MJ::JOB::low_variation::1::(?P<job>{_UUID})::SOLO")),
    (Kind.HIGH_VARIATION, re.compile(rf"MJ::JOB::high_variation::1::(?P<job>{_UUID})::SOLO")),
    (Kind.INPAINT, re.compile(rf"MJ::Inpaint::1::(?P<job>{_UUID})::SOLO")),
    (Kind.OUTPAINT, re.compile(rf"MJ::Outpaint::(?P<zoom>50|75|100)::1::(?P<job>{_UUID})::SOLO")),
    (Kind.CUSTOM_ZOOM, re.compile(rf"MJ::CustomZoom::(?P<job>{_UUID})")),
    (Kind.PAN, re.compile(rf"MJ::JOB::pan_(?P<direction>left|right|up|down)::1::(?P<job>{_UUID})::SOLO")),
    # Midjourney's describe and shorten buttons name no job; one that does (`...::<job>`) is taken too
    (Kind.PIC_READER, re.compile(rf"MJ::Job::PicReader::(?P<index>[1-4])(?:::(?P<job>{_UUID}))?")),
    (Kind.PIC_READER_ALL, re.compile(rf"MJ::Job::PicReader::all(?:::(?P<job>{_UUID}))?")),
    (Kind.PIC_READ_RETRY, re.compile(rf"MJ::Picread::Retry(?:::(?P<job>{_UUID}))?")),
    (Kind.PROMPT_ANALYZER, re.compile(rf"MJ::Job::PromptAnalyzer::(?P<index>[1-5])(?:::(?P<job>{_UUID}))?")),
]


def parse_custom_id(text: str) -> CustomId:
    """Read a customId. Raises `InvalidRequest` for anything outside the grammar we emit."""
    if isinstance(text, str):
        for kind, pattern in _GRAMMAR:
            match = pattern.fullmatch(text.strip())
            if match:
                found = match.groupdict()
                return CustomId(
                    kind=kind,
                    job=found["job"] or "",
                    index=int(found.get("index") or (0 if kind is Kind.REROLL else 1)),
                    upscale=found.get("upscale"),
                    zoom=int(found["zoom"]) if found.get("zoom") else None,
                    direction=found.get("direction"),
                )
    raise InvalidRequest(f"custom_id {text!r} is not a button journeyd knows; use a customId from the task's buttons")


def format_custom_id(cid: CustomId) -> str:
    job = cid.job
    match cid.kind:
        case Kind.UPSAMPLE:
            return f"MJ::JOB::upsample::{cid.index}::{job}"
        case Kind.VARIATION:
            return f"MJ::JOB::variation::{cid.index}::{job}"
        case Kind.REROLL:
            return f"MJ::JOB::reroll::0::{job}::SOLO"
        case Kind.UPSCALE:
            return f"MJ::JOB::upsample_{cid.upscale}::1::{job}::SOLO"
        case Kind.LOW_VARIATION:
            return f"MJ::JOB::low_variation::1::{job}::SOLO"
        case Kind.HIGH_VARIATION:
            return f"MJ::JOB::high_variation::1::{job}::SOLO"
        case Kind.INPAINT:
            return f"MJ::Inpaint::1::{job}::SOLO"
        case Kind.OUTPAINT:
            return f"MJ::Outpaint::{cid.zoom}::1::{job}::SOLO"
        case Kind.CUSTOM_ZOOM:
            return f"MJ::CustomZoom::{job}"
        case Kind.PAN:
            return f"MJ::JOB::pan_{cid.direction}::1::{job}::SOLO"
        case Kind.PIC_READER:
            return f"MJ::Job::PicReader::{cid.index}"
        case Kind.PIC_READER_ALL:
            return "MJ::Job::PicReader::all"
        case Kind.PIC_READ_RETRY:
            return "MJ::Picread::Retry"
        case Kind.PROMPT_ANALYZER:
            return f"MJ::Job::PromptAnalyzer::{cid.index}"
    raise AssertionError(cid.kind)


def upscale_tags(version: str) -> tuple[str, str]:
    """The two HD upscale buttons' tags for a model version ("7", "6.1", "niji6", "5.2").

    Version 6 and later all get v6's tags: chatgpt-web-midjourney-proxy and its forks only draw
    buttons for `upsample_v6_2x_*` (and v5's), and the engine behind the button is ours anyway.
    The parser still accepts v6r1 and v7 tags."""
    major = version.removeprefix("niji").partition(".")[0]
    if major.isdigit() and int(major) <= 5:
        return "v5_2x", "v5_4x"
    return "v6_2x_subtle", "v6_2x_creative"


def _upscale_label(tag: str) -> str:
    if tag.endswith("_subtle"):
        return "Upscale (Subtle)"
    if tag.endswith("_creative"):
        return "Upscale (Creative)"
    return "Upscale (4x)" if "_4x" in tag else "Upscale (2x)"


@functools.lru_cache(maxsize=4096)
def buttons_for(job: str, kind: ResultKind, version: str) -> tuple[Button, ...]:
    """The buttons Midjourney puts under a result: a grid, or an upscaled single image.
    Cached: clients poll finished tasks, and their buttons never change."""
    return tuple(_buttons(job, kind, version))


def _buttons(job: str, kind: ResultKind, version: str) -> list[Button]:
    if kind == "describe":
        return [
            *(Button(format_custom_id(CustomId(Kind.PIC_READER, job, i)), str(i)) for i in range(1, 5)),
            Button(format_custom_id(CustomId(Kind.PIC_READ_RETRY, job)), "", "🔄"),
            Button(format_custom_id(CustomId(Kind.PIC_READER_ALL, job)), "Imagine all", "🎉"),
        ]
    if kind == "shorten":
        return [Button(format_custom_id(CustomId(Kind.PROMPT_ANALYZER, job, i)), str(i)) for i in range(1, 6)]
    if kind == "grid":
        return [
            *(Button(format_custom_id(CustomId(Kind.UPSAMPLE, job, i)), f"U{i}") for i in range(1, 5)),
            Button(format_custom_id(CustomId(Kind.REROLL, job, 0)), "", "🔄"),
            *(Button(format_custom_id(CustomId(Kind.VARIATION, job, i)), f"V{i}") for i in range(1, 5)),
        ]
    buttons = [
        Button(format_custom_id(CustomId(Kind.UPSCALE, job, upscale=tag)), _upscale_label(tag), style=3)
        for tag in upscale_tags(version)
    ]
    buttons += [
        Button(format_custom_id(CustomId(Kind.LOW_VARIATION, job)), "Vary (Subtle)", "🪄"),
        Button(format_custom_id(CustomId(Kind.HIGH_VARIATION, job)), "Vary (Strong)", "🪄"),
        Button(format_custom_id(CustomId(Kind.INPAINT, job)), "Vary (Region)", "🖌️"),
        Button(format_custom_id(CustomId(Kind.OUTPAINT, job, zoom=50)), "Zoom Out 2x", "🔍"),
        Button(format_custom_id(CustomId(Kind.OUTPAINT, job, zoom=75)), "Zoom Out 1.5x", "🔍"),
        Button(format_custom_id(CustomId(Kind.CUSTOM_ZOOM, job)), "Custom Zoom", "🔍"),
    ]
    buttons += [
        Button(format_custom_id(CustomId(Kind.PAN, job, direction=d)), "", PAN_EMOJI[d]) for d in PAN_DIRECTIONS
    ]
    return buttons


CANCEL_LABEL = "Cancel Job"
_ARROWS = {emoji.replace("\ufe0f", ""): direction for direction, emoji in PAN_EMOJI.items()}
# The labels mymidjourney / ImaginePro clients press buttons by, exactly as Midjourney shows them.
LABELS = (
    *(f"U{i}" for i in range(1, 5)),
    *(f"V{i}" for i in range(1, 5)),
    "🔄",
    "Zoom Out 2x",
    "Zoom Out 1.5x",
    "Make Square",
    "Custom Zoom",
    "Vary (Strong)",
    "Vary (Subtle)",
    "Vary (Region)",
    *PAN_EMOJI.values(),
    "Upscale (Subtle)",
    "Upscale (Creative)",
    "Upscale (2x)",
    "Upscale (4x)",
    CANCEL_LABEL,
)


def custom_id_for_label(label: str, job: str) -> CustomId:
    """The button a label stands for on a task of `version`; `Cancel Job` is not a button."""
    text = label.strip().replace("\ufe0f", "") if isinstance(label, str) else ""
    subtle, creative = "v6_2x_subtle", "v6_2x_creative"  # pressable on every version, like v5's 2x/4x
    fixed = {
        "🔄": CustomId(Kind.REROLL, job, 0),
        "Zoom Out 2x": CustomId(Kind.OUTPAINT, job, zoom=50),
        "Zoom Out 1.5x": CustomId(Kind.OUTPAINT, job, zoom=75),
        "Make Square": CustomId(Kind.OUTPAINT, job, zoom=100),
        "Custom Zoom": CustomId(Kind.CUSTOM_ZOOM, job),
        "Vary (Strong)": CustomId(Kind.HIGH_VARIATION, job),
        "Vary (Subtle)": CustomId(Kind.LOW_VARIATION, job),
        "Vary (Region)": CustomId(Kind.INPAINT, job),
        "Upscale (Subtle)": CustomId(Kind.UPSCALE, job, upscale=subtle),
        "Upscale (Creative)": CustomId(Kind.UPSCALE, job, upscale=creative),
        "Upscale (2x)": CustomId(Kind.UPSCALE, job, upscale="v5_2x"),
        "Upscale (4x)": CustomId(Kind.UPSCALE, job, upscale="v5_4x"),
    }
    if text in fixed:
        return fixed[text]
    if text in _ARROWS:
        return CustomId(Kind.PAN, job, direction=_ARROWS[text])
    if len(text) == 2 and text[0] in "UV" and text[1] in "1234":
        return CustomId(Kind.UPSAMPLE if text[0] == "U" else Kind.VARIATION, job, int(text[1]))
    raise InvalidRequest(f"unknown button {label!r}; use one of: {', '.join(LABELS)}")


@dataclass(frozen=True)
class Plan:
    """What pressing a button on a parent task creates."""

    action: Action
    op: Op | None  # None: reroll, which repeats the parent's own op with a new seed
    needs: ResultKind  # the kind of result the parent must have
    price_name: str  # the <action> of the price key: midjourney@<price_name>...
    index: int = 1  # which of the parent's images is the source (1-based)
    args: dict[str, Any] = field(default_factory=dict)
    modal: bool = False  # the task waits in MODAL for a mask and/or prompt
    every_prompt: bool = False  # 🎉Imagine all: one task per prompt of the parent


def plan_for(cid: CustomId) -> Plan:
    match cid.kind:
        case Kind.UPSAMPLE:
            return Plan(Action.UPSCALE, Op.PICK, "grid", "upscale", cid.index)
        case Kind.VARIATION:
            return Plan(Action.VARIATION, Op.VARY_STRONG, "grid", "variation", cid.index)
        case Kind.REROLL:
            return Plan(Action.REROLL, None, "grid", "reroll")
        case Kind.UPSCALE:
            tag = cid.upscale or ""
            op = Op.UPSCALE_CREATIVE if tag.endswith("creative") else Op.UPSCALE_SUBTLE
            factor = 4 if "_4x" in tag else 2
            return Plan(
                Action.UPSCALE, op, "single", f"upscale-{op.value.removeprefix('upscale_')}", args={"factor": factor}
            )
        case Kind.LOW_VARIATION:
            return Plan(Action.VARIATION, Op.VARY_SUBTLE, "single", "low-variation")
        case Kind.HIGH_VARIATION:
            return Plan(Action.VARIATION, Op.VARY_STRONG, "single", "high-variation")
        case Kind.INPAINT:
            return Plan(Action.INPAINT, Op.VARY_REGION, "single", "inpaint", modal=True)
        case Kind.OUTPAINT:
            zoom = ZOOM_PERCENT[cid.zoom or 50]
            return Plan(Action.ZOOM, Op.ZOOM_OUT, "single", "zoom", args={"zoom": zoom, "square": zoom == 1.0})
        case Kind.CUSTOM_ZOOM:
            return Plan(Action.ZOOM, Op.ZOOM_OUT, "single", "zoom", modal=True)
        case Kind.PAN:
            return Plan(Action.PAN, Op.PAN, "single", "pan", args={"direction": cid.direction})
        # A prompt picked after /describe or /shorten is an Imagine, priced as one when it is pressed; the
        # modal that confirms it (with the prompt as it is, or edited) costs nothing more.
        case Kind.PIC_READER:
            return Plan(Action.IMAGINE, Op.GENERATE, "describe", "imagine", cid.index, modal=True)
        case Kind.PIC_READER_ALL:
            return Plan(Action.IMAGINE, Op.GENERATE, "describe", "imagine", every_prompt=True)
        case Kind.PIC_READ_RETRY:
            return Plan(Action.DESCRIBE, None, "describe", "describe")
        case Kind.PROMPT_ANALYZER:
            return Plan(Action.IMAGINE, Op.GENERATE, "shorten", "imagine", cid.index, modal=True)
    raise AssertionError(cid.kind)


# Which buttons each apimart-style endpoint may press when it is given a custom_id.
ENDPOINT_KINDS: dict[str, frozenset[Kind]] = {
    "upscale": frozenset({Kind.UPSAMPLE, Kind.UPSCALE}),
    "variation": frozenset({Kind.VARIATION, Kind.LOW_VARIATION, Kind.HIGH_VARIATION}),
    "high-variation": frozenset({Kind.VARIATION, Kind.HIGH_VARIATION}),
    "low-variation": frozenset({Kind.VARIATION, Kind.LOW_VARIATION}),
    "reroll": frozenset({Kind.REROLL}),
    "zoom": frozenset({Kind.OUTPAINT, Kind.CUSTOM_ZOOM}),
    "pan": frozenset({Kind.PAN}),
    "inpaint": frozenset({Kind.INPAINT}),
}


def plan_named(
    name: str,
    *,
    index: int | None,
    parent_kind: ResultKind,
    zoom_ratio: float | None = None,
    direction: str | None = None,
) -> Plan:
    """Plans for the apimart-style endpoints, which name an action instead of a customId.

    `high-variation`/`low-variation` on a grid vary tile `index` strongly/subtly; on an upscaled
    image they are the Vary (Strong)/(Subtle) buttons.
    """
    tile = index or 1
    if name == "upscale":
        return Plan(Action.UPSCALE, Op.PICK, "grid", "upscale", tile)
    if name == "variation":
        return Plan(Action.VARIATION, Op.VARY_STRONG, "grid", "variation", tile)
    if name in ("high-variation", "low-variation"):
        op = Op.VARY_STRONG if name == "high-variation" else Op.VARY_SUBTLE
        return Plan(Action.VARIATION, op, parent_kind, name, tile if parent_kind == "grid" else 1)
    if name == "reroll":
        return Plan(Action.REROLL, None, "grid", "reroll")
    if name == "zoom":
        zoom = 1.5 if zoom_ratio is not None and zoom_ratio < 2 else 2.0
        return Plan(Action.ZOOM, Op.ZOOM_OUT, "single", "zoom", args={"zoom": zoom, "square": False})
    if name == "pan":
        if direction not in PAN_DIRECTIONS:
            raise InvalidRequest(f"direction must be one of left, right, up, down; got {direction!r}")
        return Plan(Action.PAN, Op.PAN, "single", "pan", args={"direction": direction})
    if name == "inpaint":
        return Plan(Action.INPAINT, Op.VARY_REGION, "single", "inpaint", modal=True)
    raise ValueError(f"no plan named {name!r}")
