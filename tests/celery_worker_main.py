"""`run_worker` as its own process, for signal tests: python -m tests.celery_worker_main DB IMAGES BROKER NAMESPACE.

Its engine draws classic pictures slowly (about 1.5 s an Imagine, reporting steps), so a test can
signal it while a task runs. `journeyd worker` will be this with the configured engine.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from journeyd.clock import SystemClock
from journeyd.dispatch.celery import make_celery, run_worker
from journeyd.engines.classic import ClassicEngine
from journeyd.media.storage import LocalImageStore
from journeyd.store.sqlite import SqliteStore
from journeyd.worker import Worker

DRAW_S = 1.5  # how long an Imagine takes: time to send SIGTERM while it runs


def main(db: str, images: str, broker: str, namespace: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    store = SqliteStore(db)
    worker = Worker(
        store,
        LocalImageStore(Path(images)),
        ClassicEngine(base_size=64, step_delay_s=DRAW_S / 12),  # an Imagine is 12 steps
        SystemClock(),
        worker_id="proc-worker",
        overlap_saves=True,  # as `journeyd worker` runs: SIGTERM waits for the last save too
    )
    try:
        return run_worker(make_celery(broker, namespace=namespace), [worker], namespace=namespace, hostname="proc@test")
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
