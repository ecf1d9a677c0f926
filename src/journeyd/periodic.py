"""A job on a daemon thread: run, wait, run again, until stopped. A failed run is logged, not fatal."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from journeyd.domain.errors import StorageUnavailable

log = logging.getLogger("journeyd.periodic")


class Periodic:
    def __init__(self, name: str, work: Callable[[], object], interval_s: float) -> None:
        self.name, self.work, self.interval_s = name, work, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"journeyd-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.work()
            except StorageUnavailable as error:  # named in one line; the next pass tries again
                log.error("%s pass failed: %s", self.name, error)
            except Exception:
                log.exception("%s pass failed", self.name)
