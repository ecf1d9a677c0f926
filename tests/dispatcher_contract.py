"""The dispatcher's promises, as one suite every adapter runs (local threads; Celery over RabbitMQ).

The classes here have no `Test` prefix: pytest collects them only where an adapter's module combines
them with a `rig` fixture (tests/test_dispatch_local.py, tests/test_dispatch_celery.py). A rig is the
adapter seen from outside: a real service and SQLite store whose submits ring the adapter, and
"machines" (groups of workers on one engine) it can start. Engines are classic pictures behind a
gate, so a test decides when a task may finish and sees which engine object ran what.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from journeyd.clock import ManualClock
from journeyd.domain.keys import ApiKey, hash_secret
from journeyd.domain.lifecycle import Status
from journeyd.domain.prompt import PromptSpec
from journeyd.domain.routing import routing_label
from journeyd.domain.task import Task
from journeyd.engines.base import Image, Progress, served_models
from journeyd.engines.classic import ClassicEngine
from journeyd.runtime import Runtime, build_runtime
from journeyd.service import Caller
from journeyd.worker import Worker
from tests.conftest import make_settings

PRICES = '{"midjourney@imagine": 2}'
CREDITS = 100
KEY = ApiKey("KEY1", "jd_dispa", "dispatch", CREDITS, 0)
CALLER = Caller(key=KEY)


class Journal:
    """Which engine started drawing which prompt, in order, across threads."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.entries: list[tuple[str, GatedEngine]] = []

    def started(self, text: str, engine: GatedEngine) -> None:
        with self._lock:
            self.entries.append((text, engine))
            self._lock.notify_all()

    def texts(self) -> list[str]:
        with self._lock:
            return [text for text, _ in self.entries]

    def wait_started(self, text: str, timeout_s: float = 15.0) -> GatedEngine:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                for seen, engine in self.entries:
                    if seen == text:
                        return engine
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{text!r} never started; started: {self.texts()}")
                self._lock.wait(left)


@dataclass
class _Served:
    """The `versions` table `served_models` reads, for an engine restricted to some labels."""

    labels: Sequence[str]

    def served(self) -> list[str]:
        return list(self.labels)


class GatedEngine(ClassicEngine):
    """Classic pictures (64 px), but an Imagine waits at `gate`, reporting a step every few
    milliseconds meanwhile, so a cancel lands at the next step as it would on a GPU."""

    def __init__(self, journal: Journal, *, models: Sequence[str] | None = None, gate_open: bool = True) -> None:
        super().__init__(base_size=64)
        self.journal = journal
        self.gate = threading.Event()
        if gate_open:
            self.gate.set()
        if models is not None:
            self.versions = _Served(models)

    def generate(
        self,
        prompt: PromptSpec,
        size: tuple[int, int],
        seeds: Sequence[int],
        progress: Progress,
        init_images: Sequence[Image] = (),
    ) -> list[Image]:
        self.journal.started(prompt.text, self)
        while not self.gate.wait(0.005):
            progress(0, 100)  # a step: the heartbeat reads cancel_requested here
        return super().generate(prompt, size, seeds, progress, init_images)


class Rig(Protocol):
    runtime: Runtime

    def machine(self, engine: GatedEngine, count: int = 1) -> list[Worker]:
        """Start `count` workers drawing on `engine`, as one box with `count` devices would."""
        ...

    def ring_by_hand(self, task_id: str, model: str) -> None:
        """Deliver one more bell for `task_id`, outside the service (a broker redelivery, say)."""
        ...

    def wait_bells_answered(self, timeout_s: float = 15.0) -> None:
        """Return once every bell rung so far has reached a worker and been answered."""
        ...


@dataclass
class Base:
    """What both rigs share: a real runtime (service, SQLite store, image folder) with no workers."""

    tmp_path: Path
    clock: ManualClock = field(default_factory=ManualClock)
    runtime: Runtime = field(init=False)

    def __post_init__(self) -> None:
        self.runtime = build_runtime(make_settings(self.tmp_path, prices=PRICES), clock=self.clock, seed=11)
        self.runtime.store.create_key(KEY, hash_secret("jd_dispatch_secret_0123"))
        self._serial = 0

    def workers(self, engine: GatedEngine, count: int) -> list[Worker]:
        made = []
        for _ in range(count):
            self._serial += 1
            made.append(
                Worker(
                    self.runtime.store,
                    self.runtime.images,
                    engine,
                    self.clock,
                    worker_id=f"w{self._serial}",
                    heartbeat_ms=0,  # every step reads the row: cancels land at once
                    models=served_models(engine),
                    overlap_saves=True,  # as a dispatcher's workers run
                )
            )
        return made

    def close(self) -> None:
        self.runtime.store.close()


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class DispatcherContract:
    @pytest.fixture
    def base(self, tmp_path: Path) -> Iterator[Base]:
        made = Base(tmp_path)
        yield made
        made.close()

    # --- helpers -------------------------------------------------------------------------------
    @staticmethod
    def submit(rig: Rig, prompt: str) -> Task:
        return rig.runtime.service.imagine(CALLER, prompt)

    @staticmethod
    def ended(rig: Rig, *tasks: Task, status: Status = Status.SUCCESS, timeout_s: float = 15.0) -> list[Task]:
        store = rig.runtime.store

        def all_ended() -> list[Task] | None:
            now = [store.get_task(task.id) for task in tasks]
            return now if all(t is not None and t.status.terminal for t in now) else None  # type: ignore[misc]

        done: list[Task] = wait_for(all_ended, f"tasks {[t.prompt for t in tasks]} to end", timeout_s)
        assert [t.status for t in done] == [status] * len(done), [(t.prompt, t.status, t.fail_reason) for t in done]
        return done

    @staticmethod
    def charges(rig: Rig, task: Task) -> list[str]:
        return [entry.kind for entry in rig.runtime.store.ledger(task_id=task.id)]

    # --- promises --------------------------------------------------------------------------------
    def test_a_woken_task_runs_exactly_once(self, rig: Rig) -> None:
        journal = Journal()
        rig.machine(GatedEngine(journal), count=2)
        task = self.submit(rig, "a red fox in the snow")
        (done,) = self.ended(rig, task)
        rig.wait_bells_answered()
        assert journal.texts() == ["a red fox in the snow"]
        assert done.result is not None and done.attempts == 1
        assert self.charges(rig, task) == ["charge"]

    def test_a_duplicate_bell_runs_the_task_once(self, rig: Rig) -> None:
        journal = Journal()
        engine = GatedEngine(journal, gate_open=False)
        rig.machine(engine, count=2)
        task = self.submit(rig, "a lighthouse at dusk")
        journal.wait_started("a lighthouse at dusk")
        # rung again while it runs (a second wake, a redelivered message), and again after it ended
        rig.runtime.service.dispatcher.wake(task.id, routing_label(task.spec))
        rig.ring_by_hand(task.id, routing_label(task.spec))
        engine.gate.set()
        self.ended(rig, task)
        rig.ring_by_hand(task.id, routing_label(task.spec))
        rig.wait_bells_answered()
        assert journal.texts() == ["a lighthouse at dusk"]
        assert self.charges(rig, task) == ["charge"]
        assert rig.runtime.store.get_task(task.id).attempts == 1  # type: ignore[union-attr]

    def test_turbo_runs_before_fast_before_relax_whatever_the_ring_order(self, rig: Rig) -> None:
        journal = Journal()
        engine = GatedEngine(journal, gate_open=False)
        rig.machine(engine, count=1)
        busy = self.submit(rig, "the first one")
        journal.wait_started("the first one")
        queued = [self.submit(rig, f"a {speed} one --{speed}") for speed in ("relax", "fast", "turbo", "relax")]
        engine.gate.set()
        self.ended(rig, busy, *queued)
        assert journal.texts() == ["the first one", "a turbo one", "a fast one", "a relax one", "a relax one"]

    def test_two_workers_share_the_load(self, rig: Rig) -> None:
        journal = Journal()
        first, second = GatedEngine(journal, gate_open=False), GatedEngine(journal, gate_open=False)
        rig.machine(first)
        rig.machine(second)
        tasks = [self.submit(rig, "one"), self.submit(rig, "two")]
        engines = {journal.wait_started("one"), journal.wait_started("two")}
        assert engines == {first, second}  # both at once: each box took one
        first.gate.set()
        second.gate.set()
        done = self.ended(rig, *tasks)
        assert all(self.charges(rig, task) == ["charge"] for task in done)

    def test_a_worker_only_takes_the_models_it_serves(self, rig: Rig) -> None:
        journal = Journal()
        v7 = GatedEngine(journal, models=["7"])
        niji = GatedEngine(journal, models=["niji6"])
        rig.machine(v7)
        rig.machine(niji)
        tasks = [
            self.submit(rig, "an anime cat --niji 6"),
            self.submit(rig, "a photo of a cat --v 7"),
            self.submit(rig, "an anime dog --niji 6"),
            self.submit(rig, "a photo of a dog --v 7"),
        ]
        self.ended(rig, *tasks)
        ran_on = {text: engine for text, engine in journal.entries}
        assert ran_on == {"an anime cat": niji, "an anime dog": niji, "a photo of a cat": v7, "a photo of a dog": v7}

    def test_a_cancel_stops_the_running_task_and_the_worker_takes_the_next(self, rig: Rig) -> None:
        journal = Journal()
        engine = GatedEngine(journal, gate_open=False)
        rig.machine(engine, count=1)
        running = self.submit(rig, "a long one")
        journal.wait_started("a long one")
        following = self.submit(rig, "the next one")
        rig.runtime.service.cancel(CALLER, running.id)
        (cancelled,) = self.ended(rig, running, status=Status.CANCELLED)
        assert cancelled.fail_reason == "cancelled by request"
        assert self.charges(rig, running) == ["charge", "refund"]
        assert journal.wait_started("the next one") is engine  # the same engine object: the model stayed loaded
        engine.gate.set()
        self.ended(rig, following)
        assert journal.texts() == ["a long one", "the next one"]
