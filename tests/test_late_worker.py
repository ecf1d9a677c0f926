"""A worker that stalls past its lease and then carries on (a SIGSTOP, a long GC pause, a swapped-out
box): the task has been run again and finished meanwhile, so the late worker's end is refused and
its images can never replace the ones the finished task names."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from journeyd.clock import ManualClock
from journeyd.domain.errors import StorageUnavailable
from journeyd.domain.prompt import PromptSpec
from journeyd.engines.base import Image, Progress
from journeyd.engines.classic import ClassicEngine
from journeyd.runtime import build_runtime
from journeyd.service import Caller
from tests.conftest import make_settings


class StallingEngine(ClassicEngine):
    """Reports its first step, then stalls until released; then draws as usual."""

    def __init__(self) -> None:
        super().__init__(base_size=64)
        self.stalled, self.release = threading.Event(), threading.Event()

    def generate(
        self,
        prompt: PromptSpec,
        size: tuple[int, int],
        seeds: Sequence[int],
        progress: Progress,
        init_images: Sequence[Image] = (),
    ) -> list[Image]:
        progress(1, 12)
        self.stalled.set()
        assert self.release.wait(30)
        return [image + 40 for image in super().generate(prompt, size, seeds, lambda *_: None, init_images)]


def test_a_late_worker_cannot_finish_or_overwrite_a_task_run_again(tmp_path: Path) -> None:
    clock = ManualClock()
    runtime = build_runtime(make_settings(tmp_path, classic_size=64, lease_s=5), clock=clock, seed=3)
    stalling = StallingEngine()
    late = runtime.inline_worker("late")
    late.engine = stalling
    task = runtime.service.imagine(Caller(), "a harbour at night")
    thread = threading.Thread(target=late.run_next)
    thread.start()
    assert stalling.stalled.wait(30)

    clock.advance(6)  # its lease (5 s) ran out while it stalled: requeued and run by another worker
    assert runtime.service.reclaim().requeued == [task.id]
    assert runtime.run_pending() == 1
    finished = runtime.store.get_task(task.id)
    assert finished is not None and finished.status.value == "success" and finished.attempts == 2
    assert finished.result is not None
    pictures = {key: runtime.images.get(key) for key in (*finished.result.images, finished.result.grid)}

    stalling.release.set()  # the late worker wakes, draws, saves and tries to finish
    thread.join(30)
    after = runtime.store.get_task(task.id)
    assert after == finished  # its finish was refused
    for key, data in pictures.items():
        assert runtime.images.get(key) == data  # and its images replaced none of the finished run's
    folder = runtime.settings.images_dir / task.id
    assert sorted(p.name for p in folder.iterdir()) == sorted(key.split("/")[1] for key in pictures)
    runtime.store.close()


def test_a_heartbeat_that_cannot_reach_the_database_does_not_fail_the_task(tmp_path: Path) -> None:
    """A network blip between a worker and its database (a cut connection, a failover) loses a heartbeat or
    two, not the task: the render goes on, and the store judges the lease at the next heartbeat or the finish."""
    clock = ManualClock()
    runtime = build_runtime(make_settings(tmp_path, classic_size=64), clock=clock, seed=3)
    worker = runtime.inline_worker()
    worker.heartbeat_ms = 0  # every step writes (the clock stands still): the first two are lost
    task = runtime.service.imagine(Caller(), "a harbour at night")
    heartbeat, missed = runtime.store.heartbeat, []

    def blip(*args: object, **kwargs: object) -> bool | None:
        if len(missed) < 2:
            missed.append(args)
            raise StorageUnavailable("postgresql://db", "the database is unreachable", "it reconnects by itself")
        return heartbeat(*args, **kwargs)  # type: ignore[arg-type]

    runtime.store.heartbeat = blip  # type: ignore[method-assign]
    ended = worker.run_next()
    assert len(missed) == 2
    assert ended is not None and ended.status.value == "success", ended
    assert ended.result is not None and len(ended.result.images) == 4
    assert runtime.store.get_task(task.id) == ended and ended.attempts == 1
    runtime.store.close()
