"""The change feed behind the server-sent events: one reader's cursor over its owner's task changes.

The task row is the truth, so a stream reads the changes from the store, where every API node sees
every worker's writes, not from a bus inside one process. Its cursor is a time: the latest
`updated_at` (ms) it has read. A change stamped before the cursor can still commit after the reader
passed it (a transaction that waited for a lock, another node's clock a little behind), so each poll
rescans `OVERLAP_MS` behind the cursor and leaves out what it already sent, by task id and version.
A reader that resumes from a cursor gets every change after it, and perhaps a few it had: clients
tell them apart by task id and `version`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from journeyd.domain.errors import InvalidRequest
from journeyd.domain.task import Task
from journeyd.store.base import TaskStore

OVERLAP_MS = 5_000  # longer than a write transaction waits for a lock, or nodes' clocks drift apart
PAGE = 500  # tasks read per statement
REMEMBERED = 10_000  # (task, version) pairs one stream keeps to leave out what it sent
MAX_CURSOR_DIGITS = 19  # a millisecond time, as a signed 64-bit integer


@dataclass(frozen=True)
class Change:
    """A task as it is after a change, and the cursor a reader resumes from to get every later one."""

    task: Task
    cursor: int


def parse_cursor(text: str, *, what: str) -> int:
    """A cursor a client sends back (an event's id); InvalidRequest if it is not one."""
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_CURSOR_DIGITS):
        raise InvalidRequest(f"{what} must be the id of an event this stream sent (digits), not {text[:40]!r}")
    return int(text)


class TaskFeed:
    """The changes of `owner`'s tasks after `since` (a cursor), or, without one, after `now`: a new
    stream starts with no backlog. Not thread-safe: one stream polls its own feed."""

    def __init__(self, store: TaskStore, owner: str | None, *, since: int | None, now: int) -> None:
        self._store, self._owner = store, owner
        self._cursor = now if since is None else since
        self._quiet_before = now if since is None else None  # changes before this are not news to the reader
        self._sent: OrderedDict[str, int] = OrderedDict()  # task id -> the latest version read
        self._count: int | None = None  # the store's change count when the last poll began

    @property
    def cursor(self) -> int:
        return self._cursor

    def news(self) -> bool | None:
        """Whether the store saw a change (any owner's) since the last poll began; None if it cannot tell."""
        count = self._store.change_count()
        return None if count is None else count != self._count

    def poll(self) -> list[Change]:
        """Every change committed since the last poll (and, the first time, since the start), oldest first."""
        self._count = self._store.change_count()  # before the read: a change during it is news next time
        changes = []
        for task in self._read(self._cursor - OVERLAP_MS):
            if self._sent.get(task.id, -1) >= task.version:
                continue  # sent already (or a heartbeat that changed nothing a client sees)
            self._remember(task)
            if self._quiet_before is not None and task.updated_at < self._quiet_before:
                continue
            self._cursor = max(self._cursor, task.updated_at)
            changes.append(Change(task, self._cursor))
        self._quiet_before = None  # after the first read, whatever is new was changed after the start
        return changes

    def _read(self, since: int) -> list[Task]:
        tasks, after = [], ""
        while True:
            page = self._store.changed_tasks(self._owner, since=since, after_id=after, limit=PAGE)
            tasks.extend(page)
            if len(page) < PAGE:
                return tasks
            since, after = page[-1].updated_at, page[-1].id

    def _remember(self, task: Task) -> None:
        self._sent[task.id] = task.version
        self._sent.move_to_end(task.id)
        if len(self._sent) > REMEMBERED:
            self._sent.popitem(last=False)
