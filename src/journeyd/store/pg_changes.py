"""Unfinished tasks kept in an API node's memory, each until PostgreSQL says its row changed.

A poll of an unfinished task is the fleet's most common request, and on PostgreSQL each one is a
round trip that costs an API node more than the rest of the request. A trigger (migration 8) sends
`NOTIFY journeyd_tasks, '<task id>'` for every row UPDATE, delivered once the change commits; a
listener thread on its own connection drops each named task from the cache. So a node serves a
task from memory only while it listens, and another node's change reaches it as fast as PostgreSQL
delivers the notification and the listener thread gets its turn (0.16 ms at the median on the test VM,
up to Python's 5 ms thread switch on a busy node; a network hop more on a LAN).

Three rules keep a copy from outliving a change:
- a read fills the cache only if no notification arrived (and the listener did not drop) while it
  ran: `mark()` before the read, `put(task, mark)` after; a change committed after the read's
  snapshot may have been announced in between;
- when the listening connection drops, the cache empties and stays off until LISTEN runs again:
  what changed meanwhile was announced to nobody;
- the listener pings the server every `PING_S`, and the cache serves nothing while no ping has come
  back for `TRUSTED_S`: a connection cut without a word (a partition) cannot keep old copies alive
  for longer than that. A ping's answer comes after every notification sent before it.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import psycopg

from journeyd.domain.task import Task

log = logging.getLogger("journeyd.store")

CHANNEL = "journeyd_tasks"
LIVE_CACHE_SIZE = 10_000  # unfinished tasks kept; the least recently read go first
RETRY_S = 1.0  # between tries to listen again after the connection dropped
PING_S = 0.5  # how often the listener makes a round trip to the server
TRUSTED_S = 3.0  # how long after a ping's start the cache is still served


class LiveTasks:
    """The cache. Thread-safe: request threads read and fill it, the listener thread empties it."""

    def __init__(self, size: int = LIVE_CACHE_SIZE, clock: Callable[[], float] = time.monotonic) -> None:
        self._size, self._clock = size, clock
        self._tasks: OrderedDict[str, Task] = OrderedDict()
        self._lock = threading.Lock()
        self._trusted_until = -1.0  # monotonic time: the cache serves nothing after it
        self._changes = 0  # notifications (and drops) so far: a read's mark

    @property
    def _listening(self) -> bool:
        return self._clock() < self._trusted_until

    def get(self, task_id: str) -> Task | None:
        with self._lock:
            task = self._tasks.get(task_id) if self._listening else None
            if task is not None:
                self._tasks.move_to_end(task_id)
            return task

    def mark(self) -> int | None:
        """Taken before a read: None while not listening (the read must not fill the cache)."""
        with self._lock:
            return self._changes if self._listening else None

    def put(self, task: Task, mark: int | None) -> None:
        with self._lock:
            if mark is None or mark != self._changes or not self._listening:
                return  # something changed while the row was read: this copy may already be old
            self._tasks[task.id] = task
            self._tasks.move_to_end(task.id)
            if len(self._tasks) > self._size:
                self._tasks.popitem(last=False)

    def changed(self, task_id: str) -> None:
        with self._lock:
            self._changes += 1
            self._tasks.pop(task_id, None)

    def trust_until(self, when: float) -> None:
        """A ping that started at `when - TRUSTED_S` came back: every change before it has been heard."""
        with self._lock:
            self._trusted_until = max(self._trusted_until, when)

    def forget_all(self) -> None:
        """The listener lost its connection, or has just started listening: what changed before was
        announced to nobody."""
        with self._lock:
            self._changes += 1
            self._tasks.clear()
            self._trusted_until = -1.0


class ChangeListener:
    """LISTENs on `CHANNEL` on a connection of its own, in a daemon thread, until `stop()`; reconnects
    by itself after PostgreSQL restarts. Each notification's payload is the id of a task that changed."""

    def __init__(self, dsn: str, live: LiveTasks, connect: dict[str, object]) -> None:
        self._dsn, self._live, self._connect = dsn, live, connect
        self._stopping, self._started = threading.Event(), threading.Event()
        self._wake_r, self._wake_w = os.pipe()  # stop() writes a byte: the thread's wait ends at once
        self._thread = threading.Thread(target=self._run, name="journeyd-changes", daemon=True)

    def start(self, timeout_s: float = 5.0) -> None:
        """Returns once listening (or after `timeout_s`: the cache stays off until it is)."""
        self._thread.start()
        self._started.wait(timeout_s)

    def stop(self) -> None:
        self._stopping.set()
        os.write(self._wake_w, b"x")
        self._thread.join(10)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        warned = False
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, **self._connect) as conn:  # type: ignore[arg-type]
                    self._live.forget_all()
                    started = time.monotonic()
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._live.trust_until(started + TRUSTED_S)
                    self._started.set()
                    if warned:
                        log.info("listening for task changes again; unfinished tasks are cached again")
                    warned = False
                    self._drain(conn)
            except psycopg.Error as error:
                if not self._stopping.is_set() and not warned:
                    log.warning("not listening for task changes (%s): unfinished tasks are read afresh", error)
                    warned = True
            finally:
                self._live.forget_all()
            self._started.set()
            select.select([self._wake_r], [], [], RETRY_S)

    def _drain(self, conn: psycopg.Connection) -> None:
        changed: Callable[[str], None] = self._live.changed
        next_ping = time.monotonic() + PING_S
        while not self._stopping.is_set():
            wait = max(0.0, next_ping - time.monotonic())
            ready, _, _ = select.select([conn.fileno(), self._wake_r], [], [], wait)
            if self._wake_r in ready:
                return
            for note in conn.notifies(timeout=0):
                changed(note.payload)
            if time.monotonic() >= next_ping:
                started = time.monotonic()
                conn.execute("SELECT 1")  # what was sent before its answer arrives with it, for notifies()
                for note in conn.notifies(timeout=0):
                    changed(note.payload)
                self._live.trust_until(started + TRUSTED_S)
                next_ping = started + PING_S
