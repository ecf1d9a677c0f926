"""Upkeep, run on a timer: close expired modal windows, requeue tasks whose worker went silent, fail
the queued tasks whose model no worker serves (a fleet's), hand over again the queued tasks nobody
took, forget Idempotency-Keys whose day is over and workers silent for a day. Each is a
conditional update, so several API nodes running it at once do each thing once."""

from __future__ import annotations

import logging

from journeyd.service import TaskService

log = logging.getLogger("journeyd.maintenance")


class Maintenance:
    def __init__(self, service: TaskService) -> None:
        self.service = service

    def run_once(self) -> None:
        expired = self.service.expire_modals()
        if expired:
            log.info("modal window closed for %d task(s): %s", len(expired), ", ".join(expired))
        reclaimed = self.service.reclaim()
        if reclaimed.requeued or reclaimed.failed:
            log.warning("requeued %s, failed %s after their worker went silent", reclaimed.requeued, reclaimed.failed)
        unserved = self.service.fail_unserved()
        if unserved:
            log.warning("failed %d queued task(s) whose model no worker serves: %s", len(unserved), ", ".join(unserved))
        handed = self.service.hand_over_stale()
        if handed:
            log.info("handed %d queued task(s) to the workers again: %s", len(handed), ", ".join(handed[:10]))
        self.service.forget_idempotency_keys()
        self.service.forget_silent_workers()
