"""The store port: tasks, the queue, API keys and the ledger, each change atomic.

Every method that moves a task is a conditional update: it names the status the task must be in,
so two racing callers (a modal call and the expiry sweep, two workers, a cancel and a finish)
cannot both win. Charges and refunds are written in the same transaction as the status change
that causes them; a refund is unique per task, so it happens exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from journeyd.domain.idempotency import Idempotency
from journeyd.domain.ids import parse_task_ref
from journeyd.domain.keys import ApiKey, Charge
from journeyd.domain.lifecycle import Speed, Status
from journeyd.domain.prompt import PromptSpec
from journeyd.domain.task import Hook, Result, Task


@dataclass(frozen=True)
class LedgerEntry:
    key_id: str
    task_id: str | None
    kind: str  # "grant" | "charge" | "refund"
    step: str
    price_key: str | None
    amount: int
    created_at: int


class DuplicateNumber(Exception):
    """The numeric id drawn for a new task is taken (two tasks in one millisecond drew the same digits)."""


class QueueFull(Exception):
    """The owner already has `limit` tasks queued or running; nothing was written."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class IdempotencyKeyTaken(Exception):
    """Another request with the same owner and Idempotency-Key committed first; nothing was written."""


@dataclass(frozen=True)
class IdempotentSubmit:
    """The task an idempotency key was first used for, and that request's fingerprint."""

    task_id: str
    fingerprint: str


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery: the task as it was when it changed, and where to post it."""

    id: int
    task: Task
    hook: Hook
    attempts: int  # earlier attempts that failed
    newer_pending: bool  # a later update of the same task waits behind this one


@dataclass(frozen=True)
class Reclaimed:
    requeued: list[str]
    failed: list[str]


@dataclass(frozen=True)
class Transition:
    """A task moved from `source` to `task.status` (`source` None: it was created), at `task.updated_at`.

    A store hands one to its observer for every status change it committed, after the commit, so
    each move is seen exactly once however many callers raced for it.
    """

    task: Task  # as it is after the move
    source: Status | None
    since: int | None  # when the task entered `source` (ms), where the store knows it
    worker: str | None = None  # the worker taking, finishing or losing the task


TransitionObserver = Callable[[Transition], None]


@dataclass(frozen=True)
class WorkerSeen:
    """A fleet worker process's last announcement: the routing labels it serves, and when it said so."""

    worker: str
    models: tuple[str, ...] | None  # None: any label (the classic engine, a "*" profile)
    seen_at: int


class TaskStore(Protocol):
    # Whether other processes (other nodes' workers) share this store. A store that is not shared may
    # treat every lease as an orphan at start-up (`reclaim(every_lease=True)`); a shared one never may.
    shared: bool

    # --- tasks -----------------------------------------------------------------------------
    def insert_task(
        self,
        task: Task,
        charges: Sequence[Charge] = (),
        *,
        max_queued: int = 0,
        idempotency: Idempotency | None = None,
    ) -> None:
        """Insert a new task, debiting `charges` in the same transaction. All or nothing:
        PaymentRequired if the balance is short, DuplicateNumber if its numeric id is taken, QueueFull
        if it would be queued while its owner has `max_queued` (0: no cap) tasks queued or running,
        IdempotencyKeyTaken if `idempotency`'s key is already the owner's for another live submit.
        The count and the insert are one transaction, so concurrent submits cannot overrun the cap."""

    def get_task(self, task_id: str) -> Task | None: ...

    def get_task_by_number(self, number: int) -> Task | None: ...

    def get_tasks(self, *, ids: Sequence[str] = (), numbers: Sequence[int] = ()) -> list[Task]:
        """The tasks with these ids or numeric ids, in any order; unknown ones are left out."""

    def list_tasks(
        self, owner: str | None, *, statuses: Sequence[Status] = (), limit: int = 100, before: str | None = None
    ) -> list[Task]:
        """The owner's newest tasks first (in the order they were stored, which no two share); with
        `before` (a task id), only those stored before that task, so pages never skip or repeat a task.
        With `statuses`, in the order they will run (`before` is for the newest-first listing only)."""

    def changed_tasks(self, owner: str | None, *, since: int, after_id: str = "", limit: int = 500) -> list[Task]:
        """The owner's tasks as they are now, whose last change (`updated_at`, then id) comes after
        (`since`, `after_id`): with the default `after_id`, every task changed at `since` or later.
        In that order, at most `limit`: the next page starts after the last one's (updated_at, id).
        A change can commit after a later-stamped one, so a reader rescans a window behind its cursor."""

    def change_count(self) -> int | None:
        """A number that moves after every committed change to any task that this store can see, so an
        event stream reads `changed_tasks` when it moved instead of on a timer; None while the store
        cannot tell (a PostgreSQL store that is not listening for changes): then readers poll."""

    def recent_tasks(self, *, statuses: Sequence[Status] = (), limit: int = 100) -> list[Task]:
        """Every owner's newest tasks first, for an operator (`journeyd tasks list`); with `statuses`, only those."""

    def submit_modal(
        self,
        task_id: str,
        now: int,
        *,
        prompt: str,
        spec: PromptSpec,
        args: dict[str, Any],
        charge: Charge | None,
        max_queued: int = 0,
        idempotency: Idempotency | None = None,
    ) -> Task | None:
        """MODAL -> SUBMITTED if the modal window is still open at `now`; None if it is not (or a
        concurrent modal won). QueueFull and IdempotencyKeyTaken as for `insert_task`."""

    def idempotent_submit(self, owner: str | None, key: str, now: int) -> IdempotentSubmit | None:
        """The live (younger than the key lifetime) submit that `owner` made with `key`, if any."""

    def forget_idempotency_keys(self, now: int) -> int:
        """Delete the keys whose lifetime ended before `now`; how many there were."""

    def claim_next(self, worker: str, now: int, lease_ms: int, *, models: Sequence[str] | None = None) -> Task | None:
        """Take the first queued task (highest speed, then oldest) and lease it to `worker`. With
        `models`, only tasks whose routing label is one of them (tasks stored without a label, from
        before labels existed, are anyone's). Concurrent claimers never take one task twice."""

    def claim_batch(
        self,
        worker: str,
        now: int,
        lease_ms: int,
        *,
        limit: int,
        key: Callable[[Task], object | None],
        models: Sequence[str] | None = None,
    ) -> list[Task]:
        """Take the first queued task and, while the tasks queued right behind it have the same
        `key` (not None), up to `limit` tasks in all; lease them to `worker`. No task is taken
        ahead of one queued before it that this worker could take (`models` as for `claim_next`)
        and that no concurrent claimer holds."""

    def heartbeat(
        self, task_id: str, worker: str, now: int, lease_ms: int, progress: int, *, preview: bool = False
    ) -> bool | None:
        """Record progress (and that a new preview was saved) and extend the lease. Returns whether a
        cancel was requested, or None when `worker` no longer holds the task."""

    def finish(
        self,
        task_id: str,
        worker: str,
        status: Status,
        now: int,
        *,
        result: Result | None = None,
        engine: str | None = None,
        fail_reason: str | None = None,
    ) -> Task | None:
        """IN_PROGRESS -> a terminal status, refunding if it is one that refunds."""

    def cancel(self, task_id: str, now: int, reason: str) -> Task | None:
        """Cancel a waiting task (refunded) or ask a running one to stop. None if unknown."""

    def expire_modals(self, now: int, reason: str) -> list[str]:
        """Cancel and refund every MODAL task whose window closed before `now`."""

    def reclaim(self, now: int, max_attempts: int, *, every_lease: bool = False) -> Reclaimed:
        """Requeue tasks whose worker's lease ran out (all leases with `every_lease`); fail the
        ones that already had `max_attempts` tries. A finish that commits first always stands."""

    def stale_queued(self, now: int, older_than_ms: int, limit: int = 100) -> list[str]:
        """Queued tasks last handed to the dispatcher before `now - older_than_ms` (or never), marked
        as handed over at `now` in the same statement: the caller rings the dispatcher for them again.
        Concurrent sweepers get disjoint ids. A task is handed over when it is queued (inserted as
        SUBMITTED, a modal submitted, a lease reclaimed); none of this changes its version."""

    def fail_unserved(
        self, now: int, queued_before: int, served: Sequence[str], reason: Callable[[str], str], limit: int = 100
    ) -> list[str]:
        """Fail, refunded, the tasks queued since before `queued_before` whose routing label is not in
        `served`, each with `reason(label)`; tasks stored without a label (from before labels existed) are
        anyone's and never fail here. Concurrent sweepers fail disjoint tasks; a claim that commits first wins."""

    # --- fleet workers: which models someone serves --------------------------------------------------
    def announce_worker(self, worker: str, models: Sequence[str] | None, now: int) -> None:
        """Record that `worker` is alive at `now` and serves `models` (None: any); one row per worker."""

    def workers_seen(self, since: int) -> list[WorkerSeen]:
        """The workers whose last announcement was at `since` or later."""

    def forget_workers(self, before: int) -> int:
        """Delete the workers last heard of before `before`; how many there were."""

    def queued_count(self, owner: str | None) -> int: ...

    def queue_depth(self) -> dict[tuple[Speed, Status], int]:
        """Tasks queued (SUBMITTED) and running (IN_PROGRESS), by speed; combinations with none are left out."""

    def queue_position(self, task_id: str) -> int:
        """How many queued tasks run before this one."""

    # --- webhook outbox: written by every change of a task that has a hook -----------------------
    def due_deliveries(self, now: int, limit: int = 100, *, hold_ms: int = 0) -> list[Delivery]:
        """Per task, its oldest pending delivery, if due: one task's deliveries go out in order. With
        `hold_ms`, the deliveries returned are not due again for that long (unless settled sooner), so
        API nodes sweeping at once each take different ones; one whose sweeper died goes out later."""

    def settle_delivery(
        self, delivery_id: int, now: int, *, state: str, error: str | None = None, retry_at: int | None = None
    ) -> None:
        """Record an attempt: "delivered", "superseded", "failed", or "pending" again until `retry_at`."""

    def outbox(self, task_id: str) -> list[dict[str, Any]]: ...

    # --- keys and ledger ---------------------------------------------------------------------
    def create_key(self, key: ApiKey, key_hash: str) -> None: ...

    def key_by_hash(self, key_hash: str) -> ApiKey | None: ...

    def get_key(self, key_id: str) -> ApiKey | None: ...

    def list_keys(self) -> list[ApiKey]: ...

    def count_keys(self) -> int:
        """Every key ever created, revoked ones too: once a key has existed, anonymous access is over."""

    def revoke_key(self, key_id: str, now: int) -> ApiKey | None:
        """Revoke a key for good (its requests get 403 from now on); None if there is no such key."""

    def grant(self, key_id: str, amount: int, now: int) -> ApiKey | None:
        """Add `amount` credits to a key, with a ledger entry; the key after it, or None if there is none."""

    def ledger(self, *, key_id: str | None = None, task_id: str | None = None) -> list[LedgerEntry]: ...

    def check_writable(self) -> None:
        """Readiness: a real committed write that touches no data; StorageUnavailable when it cannot."""

    def close(self) -> None: ...


def find_task(store: TaskStore, ref: str) -> Task | None:
    """The task `ref` names in any of its forms (`task_<ULID>`, ULID, job UUID, numeric id), or None."""
    parsed = parse_task_ref(ref)
    if parsed is None:
        return None
    if parsed.number is not None:
        return store.get_task_by_number(parsed.number)
    return store.get_task(parsed.id or "")
