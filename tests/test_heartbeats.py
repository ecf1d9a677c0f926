"""How often a running task writes: each progress write is a database commit and each step preview
an upload, which a fleet pays for. The first step shows at once; then progress is written every
second, or after a quarter second when it rose 10 points; a preview rides along at most once a second;
and a task that saved no preview deletes none."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from journeyd.clock import ManualClock
from journeyd.domain.prompt import PromptSpec
from journeyd.engines.base import Image, Progress
from journeyd.engines.paced import PacedEngine
from journeyd.runtime import Runtime, build_runtime
from journeyd.service import Caller
from tests.conftest import make_settings


class TimedEngine(PacedEngine):
    """`steps` steps of `step_ms` each on the manual clock, with a preview from step `preview_from` on."""

    def __init__(self, clock: ManualClock, steps: int, step_ms: int, preview_from: int | None) -> None:
        super().__init__(task_s=0)
        self.clock, self.steps, self.step_ms, self.preview_from = clock, steps, step_ms, preview_from

    def generate(
        self,
        prompt: PromptSpec,
        size: tuple[int, int],
        seeds: Sequence[int],
        progress: Progress,
        init_images: Sequence[Image] = (),
        **references: Sequence[Image],
    ) -> list[Image]:
        picture = np.zeros((size[1], size[0], 3), np.uint8)
        for step in range(1, self.steps + 1):
            self.clock.advance(self.step_ms / 1000)
            shown = self.preview_from is not None and step >= self.preview_from
            progress(step, self.steps, picture if shown else None)
        return super().generate(prompt, size, seeds, lambda *_: None, init_images)


def run_one(tmp_path: Path, steps: int, step_ms: int, preview_from: int | None) -> tuple[Runtime, list[int], list[str]]:
    """Runs one Imagine; the progress each heartbeat wrote, and the images put and deleted."""
    clock = ManualClock()
    runtime = build_runtime(
        make_settings(tmp_path), clock=clock, engine=TimedEngine(clock, steps, step_ms, preview_from)
    )
    written: list[int] = []
    calls: list[str] = []
    heartbeat, put, delete = runtime.store.heartbeat, runtime.images.put, runtime.images.delete

    def counted_heartbeat(task_id: str, worker: str, now: int, lease_ms: int, progress: int, **kw: object):  # type: ignore[no-untyped-def]
        written.append(progress)
        return heartbeat(task_id, worker, now, lease_ms, progress, **kw)  # type: ignore[arg-type]

    runtime.store.heartbeat = counted_heartbeat  # type: ignore[method-assign]
    runtime.images.put = lambda key, data: (calls.append(f"put {key.split('/')[-1]}"), put(key, data))[1]  # type: ignore[method-assign]
    runtime.images.delete = lambda key: (calls.append(f"delete {key.split('/')[-1]}"), delete(key))[1]  # type: ignore[method-assign]
    task = runtime.service.imagine(Caller(), "a harbour at dawn")
    ended = runtime.inline_worker().run_next()
    assert ended is not None and ended.id == task.id and ended.status.value == "success"
    return runtime, written, calls


def test_a_task_of_a_fraction_of_a_second_writes_its_progress_once(tmp_path: Path) -> None:
    runtime, written, calls = run_one(tmp_path, steps=12, step_ms=15, preview_from=4)
    assert written == [8]  # the first step; the next would come a quarter second later
    assert calls == []  # no preview came with a write, so none to upload or delete
    runtime.store.close()


def test_a_long_task_writes_every_ten_points_at_most_four_times_a_second(tmp_path: Path) -> None:
    runtime, written, _ = run_one(tmp_path, steps=40, step_ms=100, preview_from=None)  # four seconds
    assert written[0] == 2 and written == sorted(written)
    assert all(b - a >= 10 for a, b in itertools.pairwise(written))
    assert len(written) <= 4 * 4 + 1
    runtime.store.close()


@pytest.mark.parametrize("step_ms", [100, 400])
def test_a_step_preview_is_uploaded_at_most_once_a_second_and_deleted_at_the_end(tmp_path: Path, step_ms: int) -> None:
    steps = 20
    runtime, _, calls = run_one(tmp_path, steps=steps, step_ms=step_ms, preview_from=2)
    previews = calls.count("put preview.jpg")
    seconds = steps * step_ms / 1000
    assert 1 <= previews <= seconds + 1, calls
    assert calls[-1] == "delete preview.jpg"  # previews are for while the task runs
    runtime.store.close()
