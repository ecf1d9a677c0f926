"""A worker on threads of its own keeps its task's lease through one long step (a recompile for a new
size, a big VAE decode): a thread renews it every quarter lease, so the lease reclaim never hands a
live task to a second worker. An engine silent past `stall_ms` counts as hung, and its task's lease
is left to run out."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from journeyd.clock import ManualClock
from journeyd.domain.lifecycle import Status
from journeyd.domain.prompt import PromptSpec
from journeyd.engines.base import Image, Progress
from journeyd.engines.paced import PacedEngine
from journeyd.runtime import Runtime, build_runtime
from journeyd.service import Caller
from journeyd.worker import Worker
from tests.conftest import make_settings

LEASE_MS = 200
WAIT_S = 10  # a bound for what the keeper does within a few of its 50 ms ticks


class LongStep(PacedEngine):
    """Reports one step, then stays in the next until released."""

    def __init__(self) -> None:
        super().__init__(task_s=0)
        self.in_step, self.release = threading.Event(), threading.Event()

    def generate(self, prompt: PromptSpec, size: tuple[int, int], seeds: Sequence[int], progress: Progress,
                 init_images: Sequence[Image] = (), **references: Sequence[Image]) -> list[Image]:  # fmt: skip
        progress(1, 10)
        self.in_step.set()
        assert self.release.wait(WAIT_S)
        return super().generate(prompt, size, seeds, lambda *_: None, init_images)


class Rig:
    def __init__(self, tmp_path: Path, stall_ms: int) -> None:
        self.clock = ManualClock()
        self.engine = LongStep()
        self.runtime: Runtime = build_runtime(make_settings(tmp_path), clock=self.clock, engine=self.engine)
        self.renewed = threading.Event()
        heartbeat = self.runtime.store.heartbeat

        def noted(*args: object, **kwargs: object) -> bool | None:
            answer = heartbeat(*args, **kwargs)  # type: ignore[arg-type]
            self.renewed.set()
            return answer

        self.runtime.store.heartbeat = noted  # type: ignore[method-assign]
        self.worker = Worker(
            self.runtime.store,
            self.runtime.images,
            self.engine,
            self.clock,
            worker_id="gpu0",
            lease_ms=LEASE_MS,
            keep_leases=True,
            stall_ms=stall_ms,
        )
        self.task = self.runtime.service.imagine(Caller(), "a harbour drawn slowly")
        self.thread = threading.Thread(target=self.worker.run_next)
        self.thread.start()
        assert self.engine.in_step.wait(WAIT_S)

    def end(self) -> Status:
        self.engine.release.set()
        self.thread.join(WAIT_S)
        task = self.runtime.store.get_task(self.task.id)
        assert task is not None
        self.runtime.store.close()
        return task.status


def test_a_step_longer_than_the_lease_keeps_the_task(tmp_path: Path) -> None:
    rig = Rig(tmp_path, stall_ms=600_000)
    for _ in range(5):  # five half-leases in one step: the lease would have run out twice
        rig.renewed.clear()
        rig.clock.advance(LEASE_MS / 2000)
        assert rig.renewed.wait(WAIT_S), "nothing renewed the lease during the step"
        assert rig.runtime.service.reclaim().requeued == []
    assert rig.end() is Status.SUCCESS
    assert rig.runtime.store.get_task(rig.task.id).attempts == 1  # type: ignore[union-attr]


class Said(logging.Handler):
    def __init__(self, words: str) -> None:
        super().__init__()
        self.words, self.heard = words, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.heard.set()


@pytest.fixture
def said_hung():  # type: ignore[no-untyped-def]
    handler = Said("reported no step for 1 s; leaving the task to the lease reclaim")
    logging.getLogger("journeyd.worker").addHandler(handler)
    yield handler
    logging.getLogger("journeyd.worker").removeHandler(handler)


def test_an_engine_silent_past_the_stall_limit_loses_its_task_to_the_reclaim(tmp_path: Path, said_hung: Said) -> None:
    rig = Rig(tmp_path, stall_ms=1_000)
    rig.clock.advance(1.5)  # past the stall limit and the lease, in one silent step
    assert said_hung.heard.wait(WAIT_S)
    assert rig.runtime.service.reclaim().requeued == [rig.task.id]
    assert rig.end() is Status.SUBMITTED  # its late end refused: the task waits for another run
