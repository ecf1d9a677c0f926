"""What `journeyd tasks list` and `journeyd tasks show` print: tasks as an operator reads them, from the
store itself, without the API (no key, no curl)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson

from journeyd.domain.lifecycle import MIDJOURNEY_STATUS, Status
from journeyd.domain.task import Task

PROMPT_WIDTH = 60


def status_named(text: str) -> Status:
    """A status as an operator may type it: journeyd's own word (`in_progress`, `cancelled`) or the
    Midjourney one the dialects show (`IN_PROGRESS`, `CANCEL`), in any case."""
    word = text.strip().lower()
    for status in Status:
        if word in (status.value, MIDJOURNEY_STATUS[status].lower()):
            return status
    known = ", ".join(MIDJOURNEY_STATUS[s] for s in Status)
    raise ValueError(f"{text!r} is not a status; one of {known}")


def _time(ms: int | None) -> str:
    """Local time, to the second: the operator's clock, not UTC."""
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _took(task: Task) -> str:
    if task.finished_at is None:
        return "-"
    return f"{(task.finished_at - task.created_at) / 1000:.1f} s"


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def table(tasks: Sequence[Task]) -> str:
    """One line per task, newest first, in columns."""
    header = ("ID", "STATUS", "ACTION", "PROGRESS", "CREATED", "TOOK", "PROMPT")
    rows = [
        (
            task.id,
            MIDJOURNEY_STATUS[task.status],
            task.action.value,
            f"{task.progress}%",
            _time(task.created_at),
            _took(task),
            _cut(task.prompt, PROMPT_WIDTH),
        )
        for task in tasks
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]

    def line(row: tuple[str, ...]) -> str:  # the prompt, last, is not padded
        return "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])

    return "\n".join(line(row) for row in (header, *rows))


def detail(task: Task, images: str) -> str:
    """Everything about one task an operator asks after; `images` is the base of image URLs."""
    lines = [
        ("id", f"{task.id}  (task_{task.id}, number {task.number}, messageId {task.job})"),
        ("status", f"{MIDJOURNEY_STATUS[task.status]}  {task.progress}%"),
        ("action", f"{task.action.value} ({task.op.value})"),
        ("prompt", task.prompt),
        ("final prompt", task.final_prompt),
        ("seed", str(task.seed)),
        ("speed", task.speed.value),
        ("owner", task.owner or "local (no key)"),
        ("parent", task.parent_id or "-"),
        ("created", _time(task.created_at)),
        ("started", _time(task.started_at)),
        ("finished", _time(task.finished_at)),
        ("took", _took(task)),
        ("attempts", str(task.attempts)),
        ("engine", task.engine or "-"),
    ]
    if task.fail_reason:
        lines.append(("fail reason", task.fail_reason))
    if task.client.metadata is not None:
        lines.append(("metadata", orjson.dumps(task.client.metadata).decode()))
    result = task.result
    if result is not None:
        if result.grid:  # a shorten answers in words only
            lines.append(("size", f"{result.width}x{result.height}"))
            lines.append(("grid", f"{result.grid}  {images}/{result.grid}"))
        lines.extend((f"image {i}", f"{key}  {images}/{key}") for i, key in enumerate(result.images, start=1))
        lines.extend((f"prompt {i}", prompt) for i, prompt in enumerate(result.prompts, start=1))
    width = max(len(name) for name, _ in lines)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in lines)
