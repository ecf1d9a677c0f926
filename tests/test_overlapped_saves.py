"""A worker's own threads overlap a task's save with the next task's drawing: the images of one task
are encoded and uploaded, and its end recorded, while the engine (a GPU) already draws the next, so
the device does not wait for the image store. One save is in flight at most, a failed save still
fails its task with a reason, and stopping waits for the save in flight."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from journeyd.clock import SystemClock
from journeyd.domain.errors import StorageUnavailable
from journeyd.domain.lifecycle import Status
from journeyd.domain.prompt import PromptSpec
from journeyd.engines.base import Image, Progress
from journeyd.engines.paced import PacedEngine
from journeyd.media.storage import ImageStore
from journeyd.runtime import Runtime, build_runtime
from journeyd.service import Caller
from journeyd.store.sqlite import SqliteStore
from journeyd.worker import Worker
from tests.conftest import make_settings

WAIT_S = 10  # a bound for what happens at once with overlapping, and never without it


class Drawing(PacedEngine):
    """Instant flat pictures; records which prompts it drew, and says when it starts each."""

    def __init__(self) -> None:
        super().__init__(task_s=0)
        self.drawn: list[str] = []
        self.started = threading.Event()

    def generate(self, prompt: PromptSpec, size: tuple[int, int], seeds: Sequence[int], progress: Progress,
                 init_images: Sequence[Image] = (), **references: Sequence[Image]) -> list[Image]:  # fmt: skip
        self.drawn.append(prompt.render())
        self.started.set()
        return super().generate(prompt, size, seeds, progress, init_images)


class HeldImages:
    """The runtime's image store, whose `put_many` waits for `release` (and fails when `fail` is set)."""

    def __init__(self, inner: ImageStore) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.saving = threading.Event()
        self.fail = False

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        self.saving.set()
        assert self.release.wait(WAIT_S), "the save was never released"
        if self.fail:
            raise StorageUnavailable("s3://test-bucket", "the server is away", "start it again")
        self.inner.put_many(items)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.fixture
def runtime(tmp_path: Path):  # type: ignore[no-untyped-def]
    runtime = build_runtime(make_settings(tmp_path), engine=Drawing())
    yield runtime
    runtime.store.close()


def overlapping(runtime: Runtime, images: HeldImages) -> Worker:
    return Worker(
        runtime.store,
        images,
        runtime.engine,
        SystemClock(),
        worker_id="gpu0",
        overlap_saves=True,  # type: ignore[arg-type]
    )


def test_the_engine_draws_the_next_task_while_the_last_ones_images_are_saved(runtime: Runtime) -> None:
    engine = runtime.engine
    assert isinstance(engine, Drawing)
    images = HeldImages(runtime.images)
    worker = overlapping(runtime, images)
    first = runtime.service.imagine(Caller(), "the first harbour")
    second = runtime.service.imagine(Caller(), "the second harbour")

    assert worker.run_next() is not None  # drawn; its save waits for `release`
    assert images.saving.wait(WAIT_S)
    assert runtime.store.get_task(first.id).status is Status.IN_PROGRESS  # type: ignore[union-attr]
    engine.started.clear()
    drawing_second = threading.Thread(target=worker.run_next)
    drawing_second.start()
    assert engine.started.wait(WAIT_S), "the engine waited for the first task's save"
    images.release.set()
    drawing_second.join(WAIT_S)
    worker.drain()

    assert engine.drawn == ["the first harbour", "the second harbour"]
    for task in (first, second):
        ended = runtime.store.get_task(task.id)
        assert ended is not None and ended.status is Status.SUCCESS and ended.result is not None
        for key in (*ended.result.images, ended.result.grid):
            assert runtime.images.get(key).startswith(b"\x89PNG")


def test_a_task_whose_overlapped_save_fails_fails_with_the_reason(runtime: Runtime) -> None:
    images = HeldImages(runtime.images)
    images.fail = True
    images.release.set()
    worker = overlapping(runtime, images)
    task = runtime.service.imagine(Caller(), "a harbour the store never sees")

    worker.run_next()
    worker.drain()

    ended = runtime.store.get_task(task.id)
    assert ended is not None and ended.status is Status.FAILURE
    assert ended.fail_reason == "journeyd cannot write to s3://test-bucket: the server is away; start it again"
    assert ended.result is None


def test_stopping_the_workers_waits_for_the_save_in_flight(tmp_path: Path) -> None:
    runtime = build_runtime(make_settings(tmp_path, workers=1), engine=Drawing())
    (worker,) = runtime.dispatcher.workers  # type: ignore[attr-defined]
    images = HeldImages(runtime.images)
    worker.images = images
    drain = worker.drain

    def drain_once_stopping() -> None:  # the save goes on only once the stop has begun
        images.release.set()
        drain()

    worker.drain = drain_once_stopping
    runtime.start()
    task = runtime.service.imagine(Caller(), "a harbour at closing time")
    assert images.saving.wait(WAIT_S)
    runtime.stop()

    store = SqliteStore(runtime.settings.database_path)  # the runtime's own is closed now
    ended = store.get_task(task.id)
    store.close()
    assert ended is not None and ended.status is Status.SUCCESS
