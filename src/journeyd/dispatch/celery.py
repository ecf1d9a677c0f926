"""The fleet dispatcher: bells over RabbitMQ through Celery, the database as the truth.

A message is a bell. It carries a task id and means "claim one queued task you can run": its body
calls `Worker.run_next()` once, so which task runs is decided by the database claim (speed, then
age, then batching), never by broker order, and one message stays unacked for one task's run, well
under RabbitMQ's `consumer_timeout`. A bell delivered twice, or one for a task that already ran, is
a claim that finds nothing. Bells are routed by model (see `bells.py`), and the claim filters by
model too, so a box never takes a task its engine cannot draw.

Publishing never fails or slows a submit: `wake` hands the bell to a publisher thread and returns.
A bell that cannot be published is logged and dropped; the task row stays SUBMITTED and the sweep on
the API nodes rings it again.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.concurrency.thread import TaskPool
from celery.exceptions import WorkerShutdown
from celery.worker import WorkController
from kombu import Connection, Exchange, Producer, Queue, binding
from kombu.asynchronous import get_event_loop, set_event_loop

from journeyd.dispatch.bells import BELL_TASK, MAX_PRIORITY, bell_priority, binding_keys, queue_name, routing_key
from journeyd.domain.errors import StorageUnavailable
from journeyd.domain.lifecycle import Speed
from journeyd.engines.base import served_models
from journeyd.periodic import Periodic
from journeyd.roster import ANNOUNCE_EVERY_S
from journeyd.worker import Worker

log = logging.getLogger("journeyd.dispatch")

# The workers each Celery app hands its bells to: set by `run_worker` / `EmbeddedWorker`, read by the
# bell task. Keyed by app so several apps (several "machines") can live in one test process.
_crews: weakref.WeakKeyDictionary[Celery, _Crew] = weakref.WeakKeyDictionary()


def make_celery(broker_url: str, *, namespace: str = "journeyd") -> Celery:
    """A Celery app with the settings a bell needs (fleet.md §2); the same for API nodes and workers."""
    app = Celery(namespace, broker=broker_url, set_as_current=False)
    app.conf.update(
        # A bell is acked only once its task has run; a worker that dies mid-task leaves it unacked, and
        # RabbitMQ hands it to another worker (whose claim finds the task once its lease ran out).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a busy worker hoards no bells
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_heartbeat=10,
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker outlives a broker restart
        broker_connection_timeout=4,
        broker_transport_options={"confirm_publish": True},
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_default_exchange=namespace,
        task_default_exchange_type="topic",
        task_default_delivery_mode="persistent",
        task_queue_max_priority=MAX_PRIORITY,
        task_default_priority=0,
        worker_hijack_root_logger=False,  # journeyd's own logging stays as configured
        worker_redirect_stdouts=False,
    )

    # shared=False: each app (each box, in a test process several) answers with its own workers
    @app.task(name=BELL_TASK, ignore_result=True, shared=False)  # type: ignore[untyped-decorator]
    def bell(task_id: str) -> None:
        _answer(app, task_id)

    return app


def exchange_for(namespace: str) -> Exchange:
    return Exchange(namespace, type="topic", durable=True)


def queue_for(namespace: str, models: Sequence[str] | None) -> Queue:
    """The durable priority queue for workers serving `models` (None: any), bound once per label."""
    exchange = exchange_for(namespace)
    return Queue(
        queue_name(namespace, models),
        exchange=exchange,
        bindings=[binding(exchange, routing_key=key) for key in binding_keys(models)],
        durable=True,
        auto_delete=False,
        queue_arguments={"x-max-priority": MAX_PRIORITY},
    )


# --- the API side: ringing ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Bell:
    task_id: str
    model: str
    speed: Speed


_STOP = object()


class CeleryDispatcher:
    """Publishes bells from a background thread, so a submit never waits on (or fails with) the broker.

    The in-memory queue is bounded, and after a failed connect the publisher does not try again for
    `retry_after_s`: while the broker is away, bells are dropped at once instead of piling up behind
    connect timeouts. Every bell dropped is logged; its task stays SUBMITTED, and the sweep rings it
    again."""

    def __init__(
        self,
        app: Celery,
        *,
        namespace: str = "journeyd",
        max_pending: int = 10_000,
        publish_timeout_s: float = 2.0,
        retry_after_s: float = 1.0,
    ) -> None:
        self.app = app
        self.exchange = exchange_for(namespace)
        self.publish_timeout_s = publish_timeout_s
        self.retry_after_s = retry_after_s
        self._pending: queue.Queue[_Bell | object] = queue.Queue(max_pending)
        self._thread: threading.Thread | None = None
        self._connection: Connection | None = None
        self._producer: Producer | None = None
        self._down_until = 0.0  # monotonic time before which the broker is taken to be away
        self._counts = threading.Lock()
        self.published = 0  # bells the broker confirmed
        self.dropped = 0  # bells given up on

    def wake(self, task_id: str, model: str = "default", speed: Speed = Speed.RELAX) -> None:
        try:
            self._pending.put_nowait(_Bell(task_id, model, speed))
        except queue.Full:
            self._drop(task_id, f"{self._pending.maxsize} bells already wait for the broker")

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="journeyd-bells", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Publish what is already queued, for up to `timeout_s`, then close the connection."""
        thread, self._thread = self._thread, None
        if thread is not None:
            with suppress(queue.Full):
                self._pending.put(_STOP, timeout=timeout_s)
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("bell publisher did not finish within %.1f s; %d bells unsent", timeout_s, self.backlog)
                return  # it still holds the connection; it is a daemon thread and ends with the process
        self._close()

    @property
    def backlog(self) -> int:
        return self._pending.qsize()

    def _run(self) -> None:
        while (bell := self._pending.get()) is not _STOP:
            assert isinstance(bell, _Bell)
            self._publish(bell)

    def _publish(self, bell: _Bell) -> None:
        if self._producer is None and time.monotonic() < self._down_until:
            self._drop(bell.task_id, "the broker was unreachable moments ago")
            return
        try:
            self.app.send_task(
                BELL_TASK,
                args=[bell.task_id],
                producer=self._ensure_producer(),
                exchange=self.exchange,
                routing_key=routing_key(bell.model),
                declare=[self.exchange],  # never a queue: workers own theirs
                priority=bell_priority(bell.speed),
                ignore_result=True,
                # one retry on a fresh connection covers a broker restarted since the last bell
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2},
                timeout=self.publish_timeout_s,
                confirm_timeout=self.publish_timeout_s,
            )
        except Exception as error:  # the broker's trouble, never the submit's: the row is the truth
            self._close()
            self._down_until = time.monotonic() + self.retry_after_s
            self._drop(bell.task_id, f"{type(error).__name__}: {error}")
            return
        with self._counts:
            self.published += 1

    def _drop(self, task_id: str, why: str) -> None:
        with self._counts:
            self.dropped += 1
        log.warning("bell for task %s not delivered (%s); the queued-task sweep rings it again", task_id, why)

    def _ensure_producer(self) -> Producer:
        if self._producer is None:
            # No AMQP heartbeat on an idle publisher (nothing would answer it); publisher confirms
            # with a timeout tell a dead connection apart instead.
            connection = self.app.connection_for_write(connect_timeout=self.publish_timeout_s, heartbeat=0)
            # at most one quick retry: a bell never waits out kombu's default 2 s back-off
            connection.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, interval_max=0, timeout=self.publish_timeout_s
            )
            self._connection, self._producer = connection, connection.Producer()
        return self._producer

    def _close(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            with suppress(Exception):  # already broken: nothing to release
                connection.release()


# --- the GPU side: answering -----------------------------------------------------------------------


class _Crew:
    """The `Worker`s (one per device) a process's pool threads borrow, one bell at a time each."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        if not workers:
            raise ValueError("a Celery worker needs at least one Worker")
        sets = {None if w.models is None else tuple(sorted(set(w.models))) for w in workers}
        if len(sets) > 1:
            raise ValueError("the Workers of one Celery worker must serve the same models; run one process per set")
        self.models: Sequence[str] | None = workers[0].models
        self.size = len(workers)
        self.answered = 0  # bells answered, a claim made or found nothing
        self._count = threading.Lock()
        self._free: queue.SimpleQueue[Worker] = queue.SimpleQueue()
        for worker in workers:
            self._free.put(worker)

    @contextmanager
    def borrow(self) -> Iterator[Worker]:
        worker = self._free.get()  # the pool has as many threads as workers: one is always free
        try:
            yield worker
        finally:
            self._free.put(worker)
            with self._count:
                self.answered += 1


def _answer(app: Celery, task_id: str) -> None:
    """A bell's body: claim and run one task this process can draw, whichever it is."""
    crew = _crews.get(app)
    if crew is None:
        log.error("bell for task %s reached a process with no workers; ignored", task_id)
        return
    with crew.borrow() as worker:
        try:
            worker.run_next()
        except StorageUnavailable as error:  # the bell is spent; the sweep rings the task again
            log.error("worker %s could not take a task: %s", worker.id, error)
        except Exception:
            log.exception("worker %s could not take a task", worker.id)


def _serve(
    app: Celery, workers: Sequence[Worker], namespace: str, hostname: str, announce_every_s: float
) -> tuple[Queue, Periodic]:
    """Declare this process's queue and start announcing it to the API nodes (see roster.py)."""
    for worker in workers:  # a fleet worker claims only what its engine draws: other boxes serve the rest
        if worker.models is None:
            worker.models = served_models(worker.engine)
    crew = _Crew(workers)
    _crews[app] = crew
    announcer = _announcer(workers[0], hostname, crew.models, announce_every_s)
    bells = queue_for(namespace, crew.models)
    app.conf.task_queues = [bells]
    with app.connection_for_write() as connection:  # declared before consuming: bells routed now are kept
        # A worker started before its broker waits for it (broker_connection_retry_on_startup), saying so.
        connection.ensure_connection(
            errback=lambda error, interval: log.warning("broker unreachable (%s); retrying in %.0f s", error, interval),
            max_retries=None,
        )
        bells.bind(connection.default_channel).declare()
    announcer.start()
    return bells, announcer


def _announcer(worker: Worker, hostname: str, models: Sequence[str] | None, every_s: float) -> Periodic:
    """Tells the API nodes, through the store, that this process is alive and which models it serves:
    once now, then every `every_s` until stopped."""

    def announce() -> None:
        worker.store.announce_worker(hostname, models, worker.clock.now_ms())

    try:
        announce()
    except StorageUnavailable as error:  # the next announcement tries again
        log.error("worker %s could not announce itself: %s", hostname, error)
    return Periodic("announce", announce, every_s)


class ThreadPool(TaskPool):  # type: ignore[misc]
    """Celery's `threads` pool, whose threads look tasks up in this worker's own app. Celery's tracer
    reads the thread's current app, which is the process default in a fresh thread: wrong when several
    apps share a process (an embedded worker beside an API node's app, or several boxes in a test)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.executor.shutdown()
        self.executor = ThreadPoolExecutor(max_workers=self.limit, initializer=self.app.set_current)


def _worker_options(crew_size: int, hostname: str | None, bells: Queue) -> dict[str, Any]:
    options: dict[str, Any] = {
        # threads, not solo: a long task must not block the AMQP heartbeat (celery#3430)
        "pool": ThreadPool,
        "concurrency": crew_size,
        "queues": [bells.name],
        # No worker-heartbeat events, mingle or gossip: the task row's lease is the liveness that
        # counts, and fewer publishes on the consumer's connection mean a quick, clean stop.
        "without_heartbeat": True,
        "without_mingle": True,
        "without_gossip": True,
    }
    if hostname:
        options["hostname"] = hostname
    return options


def run_worker(
    app: Celery,
    workers: Sequence[Worker],
    *,
    namespace: str = "journeyd",
    loglevel: str = "INFO",
    hostname: str | None = None,
    announce_every_s: float = ANNOUNCE_EVERY_S,
) -> int:
    """Consume this process's model queue with one pool thread per `Worker` until SIGTERM/SIGINT,
    announcing the models it serves every `announce_every_s`.

    SIGTERM is a warm shutdown: running tasks finish; a task that cannot (a second signal) keeps its
    lease, its bell stays unacked, and another worker runs it once the lease is reclaimed."""
    # one name per process: Celery's control queue is exclusive to its node name, and a box may run several
    hostname = hostname or f"{namespace}-{os.getpid()}@{socket.gethostname()}"
    # Celery logs every bell twice at INFO ("received", "succeeded in"), under its message id; journeyd.tasks
    # already logs each task's moves under the task's id, so those two lines are noise on a busy box.
    for name in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).getEffectiveLevel()))
    bells, announcer = _serve(app, workers, namespace, hostname, announce_every_s)
    log.info("worker %s consuming %s (%d threads)", hostname, bells.name, len(workers))
    worker = app.Worker(loglevel=loglevel, **_worker_options(len(workers), hostname, bells))
    try:
        worker.start()
    finally:
        for each in workers:  # the last task's images and end, still on their way
            each.drain()
        announcer.stop()
    return int(worker.exitcode or 0)


class EmbeddedWorker:
    """A Celery worker on a thread of this process: for tests and single-box setups. It installs no
    signal handlers; `stop()` is the warm shutdown."""

    def __init__(
        self,
        app: Celery,
        workers: Sequence[Worker],
        *,
        namespace: str = "journeyd",
        hostname: str | None = None,
        announce_every_s: float = ANNOUNCE_EVERY_S,
    ) -> None:
        self.app, self.workers, self.namespace = app, list(workers), namespace
        self.hostname = hostname or f"{namespace}-{id(self):x}@embedded"
        self.announce_every_s = announce_every_s
        self._announcer: Periodic | None = None
        self._controller: WorkController | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self, timeout_s: float = 15.0) -> None:
        bells, self._announcer = _serve(self.app, self.workers, self.namespace, self.hostname, self.announce_every_s)
        ready = self._ready

        class Controller(WorkController):  # type: ignore[misc]
            def on_consumer_ready(self, consumer: Any) -> None:
                ready.set()

        self.app.finalize()
        # Celery takes kombu's process-wide event loop if one is set: two workers in one process
        # would then share a loop and read each other's sockets. Each gets its own.
        previous = get_event_loop()
        set_event_loop(None)
        try:
            self._controller = Controller(
                app=self.app, loglevel="WARNING", **_worker_options(len(self.workers), self.hostname, bells)
            )
        finally:
            set_event_loop(previous)
        self._thread = threading.Thread(target=self._controller.start, name=f"celery-{self.hostname}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"celery worker {self.hostname} did not start within {timeout_s} s")

    @property
    def answered(self) -> int:
        """Bells this worker has answered so far."""
        crew = _crews.get(self.app)
        return crew.answered if crew is not None else 0

    def stop(self, timeout_s: float = 30.0) -> None:
        """Warm shutdown: running tasks finish first."""
        controller, thread = self._controller, self._thread
        self._controller = self._thread = None
        if controller is not None and thread is not None:
            # The stop must run on the worker's own thread: a second thread on the consumer's
            # connection deadlocks both readers. The event loop runs the callback at its next turn,
            # and the WorkerShutdown it raises is Celery's own warm shutdown.
            controller.hub.call_soon(_shut_down)
            thread.join(timeout_s)
            if thread.is_alive():
                raise RuntimeError(f"celery worker {self.hostname} did not stop within {timeout_s} s")
        for worker in self.workers:  # the last task's images and end, still on their way
            worker.drain()
        if self._announcer is not None:
            self._announcer.stop()
            self._announcer = None
        _crews.pop(self.app, None)


def _shut_down() -> None:
    raise WorkerShutdown(0)
