"""The dispatcher contract, run against the embedded adapter: worker threads in this process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from journeyd.dispatch.local import LocalDispatcher
from journeyd.domain.lifecycle import Speed
from journeyd.worker import Worker
from tests.dispatcher_contract import Base, DispatcherContract, GatedEngine


class LocalRig:
    """Each machine is a LocalDispatcher of its own over the shared store; a ring reaches all of them,
    as it reaches every thread of the one dispatcher in `journeyd serve`."""

    def __init__(self, base: Base) -> None:
        self.base, self.runtime = base, base.runtime
        self.dispatchers: list[LocalDispatcher] = []
        self.runtime.service.dispatcher = self

    def wake(self, task_id: str, model: str = "default", speed: Speed = Speed.RELAX) -> None:
        for dispatcher in self.dispatchers:
            dispatcher.wake(task_id, model, speed)

    def machine(self, engine: GatedEngine, count: int = 1) -> list[Worker]:
        workers = self.base.workers(engine, count)
        dispatcher = LocalDispatcher(workers)
        dispatcher.start()
        self.dispatchers.append(dispatcher)
        return workers

    def ring_by_hand(self, task_id: str, model: str) -> None:
        self.wake(task_id, model)

    def wait_bells_answered(self, timeout_s: float = 15.0) -> None:
        """A ring here only says "look again": there is nothing in flight to wait for."""

    def close(self) -> None:
        for dispatcher in self.dispatchers:
            for worker in dispatcher.workers:
                worker.engine.gate.set()  # type: ignore[attr-defined]
            dispatcher.stop(timeout_s=10)


class TestLocalDispatcher(DispatcherContract):
    @pytest.fixture
    def rig(self, base: Base) -> Iterator[LocalRig]:
        rig = LocalRig(base)
        yield rig
        rig.close()
