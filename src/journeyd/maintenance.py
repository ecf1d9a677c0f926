"""Upkeep on a timer: close expired modal windows and requeue tasks whose worker went silent."""

from __future__ import annotations

import logging
import threading

from journeyd.service import TaskService

log = logging.getLogger("journeyd.maintenance")


class Maintenance:
    def __init__(self, service: TaskService, interval_s: float = 1.0) -> None:
        self.service = service
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> None:
        expired = self.service.expire_modals()
        if expired:
            log.info("modal window closed for %d task(s): %s", len(expired), ", ".join(expired))
        reclaimed = self.service.reclaim()
        if reclaimed.requeued or reclaimed.failed:
            log.warning("requeued %s, failed %s after their worker went silent", reclaimed.requeued, reclaimed.failed)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="journeyd-maintenance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception:
                log.exception("maintenance pass failed")
