"""What both store adapters share: the task columns, how a row becomes a Task, JSON encoding.

Each adapter keeps its own SQL; this module holds only what does not depend on the dialect.
Rows are unpacked by position, which works the same on sqlite3.Row and psycopg's tuple rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from journeyd.domain.keys import ApiKey
from journeyd.domain.lifecycle import Action, Op, Speed, Status, sources_of
from journeyd.domain.prompt import PromptSpec
from journeyd.domain.routing import routing_label
from journeyd.domain.task import ClientData, Hook, Result, Task
from journeyd.store.base import WorkerSeen

FINISHED_CACHE_SIZE = 10_000

TASK_COLUMNS = (  # the order task_from_row unpacks
    "id, owner, action, op, status, progress, prompt, spec, speed, priority, seed, price_name, parent_id, "
    "source_index, args, metadata, result, engine, fail_reason, created_at, updated_at, started_at, "
    "finished_at, modal_deadline, cancel_requested, attempts, number, state, ref, hook_url, hook_format, version, "
    "preview_at"
)
TASK_COLUMN_COUNT = TASK_COLUMNS.count(",") + 1
COLUMN = {name: index for index, name in enumerate(TASK_COLUMNS.split(", "))}  # a column's place in a task row
# Written at insert but not part of a Task: where it may run, and when it was last handed to the dispatcher.
INSERT_COLUMNS = f"{TASK_COLUMNS}, model, handed_at"
INSERT_COLUMN_COUNT = TASK_COLUMN_COUNT + 2
KEY_COLUMNS = "id, prefix, name, balance, created_at, revoked_at"  # the order key_from_row unpacks
LEDGER_COLUMNS = "key_id, task_id, kind, step, price_key, amount, created_at"  # LedgerEntry's fields
# Every statement that changes a task bumps its version: webhook deliveries are ordered by it.
BUMP = "version = version + 1"
WAITING = sources_of(Status.CANCELLED) - {Status.IN_PROGRESS}  # cancelled at once; running ones are asked to stop


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def in_list(statuses: frozenset[Status]) -> str:
    """A SQL `(...)` list of status literals (constants of ours, never user input)."""
    return "(" + ", ".join(f"'{s.value}'" for s in sorted(statuses)) + ")"


def give_up_reason(attempts: int) -> str:
    return f"the worker stopped while running this task {attempts} times; giving up"


def insert_values(task: Task) -> tuple[Any, ...]:
    """The values of INSERT_COLUMNS for a new task."""
    hook = task.client.hook
    return (
        task.id,
        task.owner,
        task.action.value,
        task.op.value,
        task.status.value,
        task.progress,
        task.prompt,
        dumps(task.spec.to_json()),
        task.speed.value,
        task.speed.priority,
        task.seed,
        task.price_name,
        task.parent_id,
        task.source_index,
        dumps(task.args),
        dumps(task.client.metadata) if task.client.metadata is not None else None,
        dumps(task.result.to_json()) if task.result else None,
        task.engine,
        task.fail_reason,
        task.created_at,
        task.updated_at,
        task.started_at,
        task.finished_at,
        task.modal_deadline,
        int(task.cancel_requested),
        task.attempts,
        task.number,
        task.client.state,
        task.client.ref,
        hook.url if hook else None,
        hook.format if hook else None,
        task.version,
        task.preview_at,
        routing_label(task.spec),
        task.created_at if task.status is Status.SUBMITTED else None,  # handed over as it commits
    )


def task_from_row(row: Sequence[Any]) -> Task:
    # Positional: this runs on every poll, and sqlite3.Row lookups by name cost more than by index.
    (
        task_id,
        owner,
        action,
        op,
        status,
        progress,
        prompt,
        spec,
        speed,
        _priority,
        seed,
        price_name,
        parent_id,
        source_index,
        args,
        metadata,
        result,
        engine,
        fail_reason,
        created_at,
        updated_at,
        started_at,
        finished_at,
        modal_deadline,
        cancel_requested,
        attempts,
        number,
        state,
        ref,
        hook_url,
        hook_format,
        version,
        preview_at,
    ) = row[:TASK_COLUMN_COUNT]
    return Task(
        id=task_id,
        owner=owner,
        action=Action(action),
        op=Op(op),
        status=Status(status),
        progress=progress,
        prompt=prompt,
        spec=PromptSpec.from_json(orjson.loads(spec)),
        speed=Speed(speed),
        seed=seed,
        price_name=price_name,
        parent_id=parent_id,
        source_index=source_index,
        args=orjson.loads(args),
        client=ClientData(
            metadata=orjson.loads(metadata) if metadata is not None else None,
            state=state,
            ref=ref,
            hook=Hook(hook_url, hook_format) if hook_url else None,
        ),
        number=number,
        result=Result.from_json(orjson.loads(result)) if result else None,
        engine=engine,
        fail_reason=fail_reason,
        created_at=created_at,
        updated_at=updated_at,
        started_at=started_at,
        finished_at=finished_at,
        modal_deadline=modal_deadline,
        cancel_requested=bool(cancel_requested),
        attempts=attempts,
        version=version,
        preview_at=preview_at,
    )


def key_from_row(row: Sequence[Any]) -> ApiKey:
    key_id, prefix, name, balance, created_at, revoked_at = row
    return ApiKey(key_id, prefix, name, balance, created_at, revoked_at is not None)


def worker_from_row(row: Sequence[Any]) -> WorkerSeen:
    """A `workers` row (id, models, seen_at): models is a JSON list, or NULL for any."""
    worker, models, seen_at = row
    return WorkerSeen(worker, None if models is None else tuple(orjson.loads(models)), seen_at)


def run_since(task: Task) -> int | None:
    """When this run of a running task began: known for its first attempt (started_at is the first start)."""
    return task.started_at if task.attempts == 1 else None


def models_param(models: Sequence[str] | None) -> list[str] | None:
    """A claim's model filter as one bound value: None takes any task."""
    return None if models is None else list(models)


def batch_run(queued: Sequence[tuple[Task, Any]], key: Callable[[Task], object | None]) -> list[tuple[Task, Any]]:
    """The head of `queued` (in queue order) and the run of tasks right behind it with the same key
    (not None): what one batch claim takes, so no task is taken ahead of one queued before it."""
    if len(queued) <= 1:
        return list(queued)
    first = key(queued[0][0])
    run = [queued[0]]
    for item in queued[1:]:
        if first is None or key(item[0]) != first:
            break
        run.append(item)
    return run
