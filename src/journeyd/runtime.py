"""Wiring: build the store, media, engine, service, workers and upkeep from Settings (the adapters
themselves are chosen in `adapters.py`)."""

from __future__ import annotations

import fcntl
import os
import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from journeyd import observe
from journeyd.adapters import RunningDispatcher, open_dispatcher, open_images, open_store
from journeyd.clock import Clock, SystemClock
from journeyd.config import Settings
from journeyd.domain.ids import IdGenerator
from journeyd.domain.moderation import BannedWords
from journeyd.domain.task import Hook
from journeyd.engines import choose_engine, load_engines, load_prompt_rules
from journeyd.engines.base import Engine, PromptRules
from journeyd.maintenance import Maintenance
from journeyd.media.fetch import SafeFetcher
from journeyd.media.storage import ImageStore, check_writable
from journeyd.periodic import Periodic
from journeyd.roster import Roster
from journeyd.service import Limits, TaskService
from journeyd.store.base import TaskStore
from journeyd.webhooks import Notifier, Signer, load_secret
from journeyd.worker import Worker

WEBHOOK_INTERVAL_S = 0.5  # how soon a task update reaches its webhook


class DataDirBusy(RuntimeError):
    pass


class FleetMisconfigured(ValueError):
    """Settings that cannot work together in a fleet; the message says which and what to set."""


class DataDirLock:
    """One server per data dir: its queue is only safe to recover when nobody else works on it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirBusy(f"another journeyd is already using {self.path.parent}") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    store: TaskStore
    images: ImageStore
    engines: list[Engine]  # one per device; worker i draws on engines[i % len(engines)]; none on an API node
    rules: PromptRules  # what submits are checked against: the engine's own, or its configuration's on an API node
    service: TaskService
    workers: list[Worker]
    dispatcher: RunningDispatcher
    maintenance: Maintenance
    notifier: Notifier
    lock: DataDirLock
    loops: list[Periodic] = field(default_factory=list)

    @property
    def loaded(self) -> bool:
        """Whether this node loaded its engine: an API node (`--workers 0`) draws nothing, so it loads none."""
        return bool(self.engines)

    @property
    def engine(self) -> Engine:
        """The first engine (all of them serve the same models), loaded now on a node that had none:
        an API node whose queue a test runs on its own thread (`run_pending`)."""
        if not self.engines:
            self.engines = load_engines(self.settings)
        return self.engines[0]

    def start(self) -> None:
        """Take the data dir, recover what a previous process left running, then start working."""
        self.lock.acquire()
        # alone on the data dir, any running task is an orphan; a shared store's other nodes are alive
        self.service.reclaim(every_lease=not self.store.shared)
        self.maintenance.run_once()
        self.dispatcher.start()
        # the outbox survived the restart too: pending deliveries go out on the first pass
        self.loops = [
            Periodic("maintenance", self.maintenance.run_once, self.settings.sweep_interval_s),
            Periodic("webhooks", self.notifier.run_once, WEBHOOK_INTERVAL_S),
        ]
        for loop in self.loops:
            loop.start()

    def stop(self) -> None:
        for loop in self.loops:
            loop.stop()
        self.dispatcher.stop()
        self.lock.release()
        self.store.close()

    def run_pending(self, limit: int = 1000) -> int:
        """Run queued tasks on the calling thread until none is left: tests run the queue this way,
        with `workers=0`, instead of waiting for threads."""
        worker = self.inline_worker()
        count = 0
        while count < limit and worker.run_next() is not None:
            count += 1
        return count

    def inline_worker(self, worker_id: str | None = None) -> Worker:
        """A worker that runs on whichever thread calls it, separate from the dispatcher's threads."""
        worker = _make_worker(self.settings, self.store, self.images, self.engine, self.clock, "inline", threaded=False)
        if worker_id is not None:
            worker.id = worker_id
        return worker


def _make_worker(
    settings: Settings,
    store: TaskStore,
    images: ImageStore,
    engine: Engine,
    clock: Clock,
    name: str,
    *,
    threaded: bool = True,
) -> Worker:
    """A worker as configured. One on threads of its own (a dispatcher's, a `journeyd worker` process's)
    saves a task while it draws the next and keeps its leases from a thread; an inline worker
    (`run_pending`, on the caller's thread) ends each task before it returns, and only its steps renew leases."""
    return Worker(
        store,
        images,
        engine,
        clock,
        worker_id=f"{name}-{secrets.token_hex(4)}",
        lease_ms=int(settings.lease_s * 1000),
        max_output_pixels=settings.max_output_pixels,
        batch_tasks=settings.batch_tasks,
        overlap_saves=threaded,
        keep_leases=threaded,
        stall_ms=int(settings.stall_s * 1000),
    )


def _engines(settings: Settings, given: Engine | Sequence[Engine] | None, threads: int | None) -> list[Engine]:
    """The engines given (one, or one per device), else the configured ones, loaded now; none for a
    node with no worker threads (an API node: on a CPU box of a GPU fleet it must not load weights)."""
    if given is not None:
        return list(given) if isinstance(given, Sequence) else [given]
    return [] if threads == 0 else load_engines(settings)


def _thread_count(settings: Settings) -> int | None:
    """In-process worker threads (None: one per engine device). With a broker, the work runs in
    `journeyd worker` processes, so this process runs none."""
    if settings.broker_url is None:
        return settings.workers
    if settings.workers:
        raise FleetMisconfigured(
            "with JOURNEYD_BROKER_URL set, tasks run in `journeyd worker` processes: serve with --workers 0"
        )
    return 0


def build_workers(settings: Settings, *, clock: Clock | None = None) -> tuple[TaskStore, ImageStore, list[Worker]]:
    """A worker process's parts (`journeyd worker`): the shared store and images, and one worker per
    engine device, each running one task at a time."""
    clock = clock or SystemClock()
    settings = choose_engine(settings).settings
    store = open_store(settings, on_transition=observe.task_moved)
    images = open_images(settings)
    engines = load_engines(settings)
    host = os.uname().nodename
    workers = [_make_worker(settings, store, images, e, clock, f"{host}-{i}") for i, e in enumerate(engines)]
    return store, images, workers


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    engine: Engine | Sequence[Engine] | None = None,
    seed: int | None = None,
    entropy: Callable[[int], bytes] | None = None,
) -> Runtime:
    clock = clock or SystemClock()
    settings = choose_engine(settings).settings  # `auto` settled once: every part then sees the same engine
    check_writable(settings.data_dir, durable=settings.durable)
    count = _thread_count(settings)
    store = open_store(settings, on_transition=observe.task_moved, cache_live=True)
    if store.shared and not settings.webhook_secret:
        store.close()
        raise FleetMisconfigured(
            "a shared database needs JOURNEYD_WEBHOOK_SECRET (whsec_<base64>), the same on every API node, "
            "so that webhooks from every node carry one signature"
        )
    images = open_images(settings)
    engines = _engines(settings, engine, count)
    rules = engines[0] if engines else load_prompt_rules(settings)
    fetcher = SafeFetcher(
        allow_private=settings.allow_private_urls,
        timeout_s=settings.fetch_timeout_s,
        max_bytes=settings.max_fetch_bytes,
        allowed_ports=None if settings.allow_private_urls else (80, 443, 8080, 8443),
    )
    webhook_http = SafeFetcher(
        allow_private=settings.allow_private_webhooks, timeout_s=settings.webhook_timeout_s, allowed_ports=None
    )
    workers = [
        _make_worker(settings, store, images, engines[i % len(engines)], clock, f"worker{i}")
        for i in range(len(engines) if count is None else count)
    ]
    dispatcher = open_dispatcher(settings, workers)
    rng = random.Random(seed)
    if entropy is None and seed is not None:
        id_rng = random.Random(seed + 1)  # its own stream, so ids do not shift the seeds tasks get
        entropy = lambda n: id_rng.getrandbits(8 * n).to_bytes(n, "big")  # noqa: E731
    ids = IdGenerator(clock.now_ms, entropy) if entropy else IdGenerator(clock.now_ms)
    service = TaskService(
        store,
        images,
        fetcher,
        dispatcher,
        clock=clock,
        ids=ids,
        prices=settings.price_table(),
        banned=BannedWords(settings.banned_word_list()),
        hooks=webhook_http,
        default_hook=Hook(settings.notify_hook, "mj") if settings.notify_hook else None,
        rules=rules,
        rng=rng,
        # with a broker, `journeyd worker` processes announce the models they serve; embedded threads take any
        roster=Roster(store, clock, window_ms=int(settings.unserved_s * 1000)) if settings.broker_url else None,
        limits=Limits(
            modal_timeout_ms=int(settings.modal_timeout_s * 1000),
            max_queued_per_key=settings.max_queued_per_key,
            max_image_pixels=settings.max_image_pixels,
            max_request_pixels=settings.max_request_pixels,
            max_output_pixels=settings.max_output_pixels,
            max_attempts=settings.max_attempts,
            handover_ms=int(settings.handover_s * 1000),
        ),
    )
    maintenance = Maintenance(service)
    notifier = Notifier(
        store,
        webhook_http,
        Signer(load_secret(settings.webhook_secret, settings.data_dir)),
        {},  # the API's dialects add their payload renderers (`api/app.py`)
        clock=clock,
        base_url=settings.base_url,
        rng=random.Random(None if seed is None else seed + 2),
    )
    return Runtime(
        settings,
        clock,
        store,
        images,
        engines,
        rules,
        service,
        workers,
        dispatcher,
        maintenance,
        notifier,
        DataDirLock(settings.data_dir),
    )
