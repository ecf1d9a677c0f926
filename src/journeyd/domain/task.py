"""The Task: one row, the unit everything else moves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from journeyd.domain.analysis import describe_text, shorten_text
from journeyd.domain.buttons import Button, ResultKind, buttons_for
from journeyd.domain.ids import job_uuid
from journeyd.domain.lifecycle import Action, Op, Speed, Status
from journeyd.domain.prompt import PromptSpec


@dataclass(frozen=True)
class Result:
    """Where a finished task's pixels are: storage keys of each image and of the grid. A task that
    repainted part of its parent (Vary (Region), Zoom, Pan) also keeps its feather width and, per
    image, how many pixels beyond the feather differ from the parent, as measured on the saved pixels."""

    kind: ResultKind
    images: tuple[str, ...]
    grid: str
    width: int
    height: int
    feather_px: int = 0
    changed_beyond_feather: tuple[int, ...] = ()  # one count per image; empty when nothing was composited
    prompts: tuple[str, ...] = ()  # Describe, Shorten: the prompts a button can imagine
    weights: tuple[tuple[str, float], ...] = ()  # Shorten: each phrase of the prompt and its weight 0..1

    @property
    def analysis(self) -> str | None:
        """Describe's or Shorten's answer, as Midjourney words it; None for pictures."""
        if self.kind == "describe":
            return describe_text(self.prompts)
        if self.kind == "shorten":
            return shorten_text(self.weights, self.prompts)
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "images": list(self.images),
            "grid": self.grid,
            "width": self.width,
            "height": self.height,
            "feather_px": self.feather_px,
            "changed_beyond_feather": list(self.changed_beyond_feather),
            "prompts": list(self.prompts),
            "weights": [list(pair) for pair in self.weights],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        return cls(
            data["kind"],
            tuple(data["images"]),
            data["grid"],
            data["width"],
            data["height"],
            data.get("feather_px", 0),  # rows from before these were measured
            tuple(data.get("changed_beyond_feather", ())),
            tuple(data.get("prompts", ())),
            tuple((phrase, float(weight)) for phrase, weight in data.get("weights", ())),
        )


HookFormat = Literal["mj", "mymidjourney"]


@dataclass(frozen=True)
class Hook:
    """Where a task's updates are posted, and in which dialect's shape."""

    url: str
    format: HookFormat = "mj"


@dataclass(frozen=True)
class ClientData:
    """What a client attaches to a task and gets back with it, in each dialect's own words."""

    metadata: Any = None  # apimart `metadata`
    state: str | None = None  # midjourney-proxy `state`
    ref: str | None = None  # mymidjourney `ref`
    hook: Hook | None = None  # midjourney-proxy `notifyHook`, mymidjourney `webhookOverride`


@dataclass(frozen=True)
class Task:
    id: str
    owner: str | None  # API key id; None for the local operator on loopback
    action: Action
    op: Op
    status: Status
    prompt: str  # the prompt as the client wrote it
    spec: PromptSpec  # what the engine is asked for, after structured fields overrode flags
    speed: Speed
    seed: int
    price_name: str
    created_at: int
    updated_at: int
    parent_id: str | None = None
    source_index: int = 1  # which of the parent's images this task starts from (1-based)
    args: dict[str, Any] = field(default_factory=dict)  # op arguments and input keys (mask, image prompts)
    client: ClientData = ClientData()
    number: int = 0  # the numeric id midjourney-proxy clients use (ms timestamp + 3 digits)
    progress: int = 0
    result: Result | None = None
    engine: str | None = None
    fail_reason: str | None = None
    started_at: int | None = None
    finished_at: int | None = None
    modal_deadline: int | None = None
    cancel_requested: bool = False
    attempts: int = 0
    version: int = 0  # bumped by every change; orders webhook deliveries
    preview_at: int | None = None  # when the running task last saved a preview of its images

    @property
    def job(self) -> str:
        return job_uuid(self.id)

    @property
    def final_prompt(self) -> str:
        """What the engine was asked for or, for Describe and Shorten, what it answered."""
        analysis = self.result.analysis if self.result else None
        return analysis if analysis is not None else self.spec.render()

    @property
    def preview(self) -> str | None:
        """The image key and version of the latest step preview, while the task runs."""
        if self.status is not Status.IN_PROGRESS or self.preview_at is None:
            return None
        return f"{self.id}/preview.jpg?v={self.preview_at}"

    @property
    def buttons(self) -> tuple[Button, ...]:
        if self.status is not Status.SUCCESS or self.result is None:
            return ()
        return buttons_for(self.job, self.result.kind, self.spec.model_version)
