"""Several devices: one engine on each, and by default one worker per engine, all drawing at once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from journeyd.domain.lifecycle import Status
from journeyd.engines.classic import ClassicEngine
from journeyd.runtime import build_runtime
from journeyd.service import Caller
from tests.conftest import make_settings


class Meeting:
    """A classic engine whose Imagine goes on only once every engine of its group is drawing one: were
    the tasks drawn one after another, the first would wait in vain and fail."""

    def __init__(self, barrier: threading.Barrier, done: threading.Semaphore) -> None:
        self.inner, self.barrier, self.done = ClassicEngine(base_size=64), barrier, done
        self.drawn = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        try:
            self.barrier.wait(timeout=60)
            self.drawn += 1
            return self.inner.generate(*args, **kwargs)
        finally:
            self.done.release()


def test_two_devices_draw_two_tasks_at_once(tmp_path: Path) -> None:
    barrier, done = threading.Barrier(2), threading.Semaphore(0)
    engines = [Meeting(barrier, done), Meeting(barrier, done)]
    runtime = build_runtime(make_settings(tmp_path, workers=None), engine=engines, seed=1)
    assert [worker.engine for worker in runtime.workers] == engines  # one worker per device by default
    runtime.start()
    try:
        tasks = [runtime.service.imagine(Caller(None), f"a lighthouse, take {i}") for i in range(2)]
        assert all(done.acquire(timeout=90) for _ in tasks)
        runtime.dispatcher.stop()  # lets both workers finish writing their task
        ended = [runtime.store.get_task(task.id) for task in tasks]
        assert [task.status for task in ended if task] == [Status.SUCCESS, Status.SUCCESS], ended
        assert [engine.drawn for engine in engines] == [1, 1]
    finally:
        runtime.stop()


def test_workers_share_the_devices_round_robin(tmp_path: Path) -> None:
    engines = [ClassicEngine(base_size=64), ClassicEngine(base_size=64)]
    runtime = build_runtime(make_settings(tmp_path, workers=3), engine=engines, seed=1)
    assert [worker.engine for worker in runtime.workers] == [engines[0], engines[1], engines[0]]
    assert runtime.engine is engines[0]
