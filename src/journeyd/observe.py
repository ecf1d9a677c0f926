"""What a task's moves tell the operator: the task metrics and one log line per move.

The store announces every status change it commits (`Transition`), whichever caller made it, so
each move is counted and logged once, however many callers raced for it.
"""

from __future__ import annotations

import logging

from journeyd import metrics
from journeyd.domain.lifecycle import Status
from journeyd.logs import current_request
from journeyd.store.base import Transition

log = logging.getLogger("journeyd.tasks")
MAX_KNOWN_KEYS = 10_000
_prefixes: dict[str, str] = {}  # key id -> key prefix, learned in requests, for moves made outside one


def task_moved(move: Transition) -> None:
    task, source, target = move.task, move.source, move.task.status
    action, speed = task.action.value, task.speed.value
    duration_ms = task.updated_at - move.since if move.since is not None else None
    if source is None:
        metrics.task_submitted(action, speed)
    elif source is Status.SUBMITTED and target is Status.IN_PROGRESS and duration_ms is not None:
        metrics.queue_wait(action, duration_ms / 1000)
    if target.terminal:
        metrics.task_finished(action, speed, target.value)
        if source is Status.IN_PROGRESS and task.started_at is not None and task.finished_at is not None:
            metrics.run_time(action, (task.finished_at - task.started_at) / 1000)
    if log.isEnabledFor(logging.INFO):
        request = current_request.get()
        log.info(
            "task %s %s %s -> %s",
            task.id,
            action,
            source.value if source else "new",
            target.value,
            extra={
                "in_message": ("task", "action", "from", "to"),
                "fields": {
                    "task": task.id,
                    "number": task.number,  # the id midjourney-proxy clients know it by
                    "action": action,
                    "speed": speed,
                    "from": source.value if source else None,
                    "to": target.value,
                    "duration_ms": duration_ms,
                    "worker": move.worker,
                    "request_id": request.id if request else None,
                    "key": _key_prefix(task.owner, request.key_prefix if request else None),
                    "reason": task.fail_reason if target in (Status.FAILURE, Status.CANCELLED) else None,
                },
            },
        )


def _key_prefix(owner: str | None, in_request: str | None) -> str | None:
    """The owner's key prefix: the request's, else the one a request of that key showed this process."""
    if owner is None:
        return None
    if in_request is not None:
        if len(_prefixes) >= MAX_KNOWN_KEYS:
            _prefixes.clear()
        _prefixes[owner] = in_request
        return in_request
    return _prefixes.get(owner)
