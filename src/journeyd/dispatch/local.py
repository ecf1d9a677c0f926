"""The embedded dispatcher: worker threads in this process, pulling from the SQLite queue.

The queue is the tasks table itself, so a ring of the bell only says "look again"; a task
submitted while every thread is busy is found when one comes back for more.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from journeyd.domain.errors import StorageUnavailable
from journeyd.domain.lifecycle import Speed
from journeyd.worker import Worker

log = logging.getLogger("journeyd.dispatch")


class LocalDispatcher:
    def __init__(self, workers: Sequence[Worker], *, poll_s: float = 1.0) -> None:
        self.workers = list(workers)
        self.poll_s = poll_s
        self._bell = threading.Condition()
        self._rings = 0
        self._running = False
        self._threads: list[threading.Thread] = []

    def wake(self, task_id: str, model: str = "default", speed: Speed = Speed.RELAX) -> None:
        # Every thread here shares the one queue and claims by its own worker's models: a ring only
        # says "look again", whoever it is for.
        with self._bell:
            self._rings += 1
            self._bell.notify()

    def start(self) -> None:
        self._running = True
        for worker in self.workers:
            thread = threading.Thread(target=self._loop, args=(worker,), name=f"journeyd-{worker.id}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 30.0) -> None:
        with self._bell:
            self._running = False
            self._bell.notify_all()
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads.clear()
        for worker in self.workers:  # the last task's images and end, still on their way
            worker.drain()

    def _loop(self, worker: Worker) -> None:
        while self._running:
            with self._bell:
                self._rings = 0
            try:
                task = worker.run_next()
            except StorageUnavailable as error:  # the disk's trouble, named; it tries again at the next poll
                log.error("worker %s could not take a task: %s", worker.id, error)
                task = None
            except Exception:  # the store is unreachable or similar: keep the thread alive
                log.exception("worker %s could not take a task", worker.id)
                task = None
            if task is not None:
                continue
            with self._bell:
                if self._running and self._rings == 0:
                    self._bell.wait(self.poll_s)
