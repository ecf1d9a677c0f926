"""SQLite adapter of the store: tasks, queue, keys and ledger in one WAL database file.

Each thread gets its own connection (sqlite3 connections are not shareable). Writes run in
`BEGIN IMMEDIATE` so the write lock is taken up front and no transaction fails halfway with
SQLITE_BUSY. Durable (the default), WAL runs with synchronous=FULL: a committed transaction is on
the disk before the commit returns, so it survives a power cut. Not durable (`fast`),
synchronous=NORMAL: it survives `kill -9`, but a power cut can lose the last transactions.

A disk that is full, read-only or failing is a StorageUnavailable naming the database file.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from journeyd.domain.errors import FAILING, NO_SPACE, READ_ONLY, PaymentRequired, StorageUnavailable
from journeyd.domain.idempotency import TTL_MS, Idempotency
from journeyd.domain.keys import ApiKey, Charge
from journeyd.domain.lifecycle import Speed, Status
from journeyd.domain.prompt import PromptSpec
from journeyd.domain.routing import routing_label
from journeyd.domain.task import Hook, Result, Task
from journeyd.store.base import (
    Delivery,
    DuplicateNumber,
    IdempotencyKeyTaken,
    IdempotentSubmit,
    LedgerEntry,
    QueueFull,
    Reclaimed,
    Transition,
    TransitionObserver,
    WorkerSeen,
)
from journeyd.store.rows import (
    BUMP,
    FINISHED_CACHE_SIZE,
    INSERT_COLUMN_COUNT,
    INSERT_COLUMNS,
    KEY_COLUMNS,
    LEDGER_COLUMNS,
    TASK_COLUMNS,
    WAITING,
    batch_run,
    dumps,
    give_up_reason,
    in_list,
    insert_values,
    key_from_row,
    models_param,
    run_since,
    task_from_row,
    worker_from_row,
)

log = logging.getLogger("journeyd.store")
APPLICATION_ID = 0x6A6F7572  # "jour": stamped in the file's header by the readiness probe
# primary result codes that mean the disk, not the code, is in trouble
_TROUBLE = {
    sqlite3.SQLITE_FULL: ("the disk or the database is full", NO_SPACE),
    sqlite3.SQLITE_READONLY: ("the database is read-only", READ_ONLY),
    sqlite3.SQLITE_CANTOPEN: ("the database cannot be opened for writing (a read-only folder?)", READ_ONLY),
    sqlite3.SQLITE_IOERR: ("disk I/O error", FAILING),
}

MIGRATIONS = [
    """
    CREATE TABLE tasks (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        owner TEXT,
        action TEXT NOT NULL,
        op TEXT NOT NULL,
        status TEXT NOT NULL,
        progress INTEGER NOT NULL DEFAULT 0,
        prompt TEXT NOT NULL,
        spec TEXT NOT NULL,
        speed TEXT NOT NULL,
        priority INTEGER NOT NULL,
        seed INTEGER NOT NULL,
        price_name TEXT NOT NULL,
        parent_id TEXT,
        source_index INTEGER NOT NULL DEFAULT 1,
        args TEXT NOT NULL DEFAULT '{}',
        metadata TEXT,
        result TEXT,
        engine TEXT,
        fail_reason TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        modal_deadline INTEGER,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until INTEGER
    );
    CREATE INDEX tasks_queue ON tasks (status, priority DESC, seq);
    CREATE INDEX tasks_owner ON tasks (owner, status);
    CREATE INDEX tasks_modal ON tasks (modal_deadline) WHERE status = 'modal';
    CREATE INDEX tasks_lease ON tasks (lease_until) WHERE status = 'in_progress';
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        balance INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE ledger (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key_id TEXT NOT NULL REFERENCES api_keys (id),
        task_id TEXT,
        kind TEXT NOT NULL CHECK (kind IN ('grant', 'charge', 'refund')),
        step TEXT NOT NULL,
        price_key TEXT,
        amount INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (task_id, step)
    );
    CREATE INDEX ledger_key ON ledger (key_id);
    """,
    # 2: one identity in every dialect's form, client data, and the webhook outbox
    """
    ALTER TABLE tasks ADD COLUMN number INTEGER;
    ALTER TABLE tasks ADD COLUMN state TEXT;
    ALTER TABLE tasks ADD COLUMN ref TEXT;
    ALTER TABLE tasks ADD COLUMN hook_url TEXT;
    ALTER TABLE tasks ADD COLUMN hook_format TEXT;
    ALTER TABLE tasks ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
    UPDATE tasks SET number = created_at * 1000 + seq % 1000;
    CREATE UNIQUE INDEX tasks_number ON tasks (number);
    CREATE TABLE webhook_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        url TEXT NOT NULL,
        format TEXT NOT NULL,
        snapshot TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'superseded', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        last_error TEXT,
        created_at INTEGER NOT NULL,
        sent_at INTEGER,
        UNIQUE (task_id, version)
    );
    CREATE INDEX outbox_due ON webhook_outbox (state, next_at);
    CREATE INDEX outbox_task ON webhook_outbox (task_id, state);
    """,
    # 3: step previews
    """
    ALTER TABLE tasks ADD COLUMN preview_at INTEGER;
    """,
    # 4: Idempotency-Key of submits, per owner ('' for the local operator)
    """
    CREATE TABLE idempotency_keys (
        owner TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        task_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (owner, key)
    );
    CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);
    """,
    # 5: which workers may run a task (its routing label), and when it was last handed to the dispatcher
    """
    ALTER TABLE tasks ADD COLUMN model TEXT;
    ALTER TABLE tasks ADD COLUMN handed_at INTEGER;
    CREATE INDEX tasks_handed ON tasks (handed_at) WHERE status = 'submitted';
    """,
    # 6: an owner's history page by page, and the change feed of server-sent events
    """
    CREATE INDEX tasks_owner_seq ON tasks (owner, seq);
    CREATE INDEX tasks_owner_changed ON tasks (owner, updated_at);
    """,
    # 7: fleet workers' announcements: the routing labels each serves (a JSON list; NULL: any), and when
    # each last said so
    """
    CREATE TABLE workers (id TEXT PRIMARY KEY, models TEXT, seen_at INTEGER NOT NULL);
    CREATE INDEX workers_seen ON workers (seen_at);
    """,
]

# --- the hot statements, named so a test can EXPLAIN QUERY PLAN the exact production text ----------
# Their atomicity comes from BEGIN IMMEDIATE (one writer at a time); the status guards in each UPDATE
# say what the statement needs, and make it safe even without that.
_CLAIM = (  # a queued task, leased to :worker until :until
    "status = 'in_progress', started_at = COALESCE(started_at, :now), lease_owner = :worker, "
    f"lease_until = :until, attempts = attempts + 1, updated_at = :now, {BUMP}"
)
# :models is a JSON list of routing labels, or NULL for any; rows from before migration 5 (NULL) are anyone's
_CLAIMABLE = (
    "status = 'submitted' AND (:models IS NULL OR model IS NULL OR model IN (SELECT value FROM json_each(:models)))"
)
CLAIM_HEAD = f"SELECT {TASK_COLUMNS}, seq FROM tasks WHERE {_CLAIMABLE} ORDER BY priority DESC, seq LIMIT :limit"
CLAIM_ONE = f"UPDATE tasks SET {_CLAIM} WHERE seq = :seq AND status = 'submitted' RETURNING {TASK_COLUMNS}"
RECLAIM_EXPIRED = (
    "SELECT id, attempts, lease_owner FROM tasks WHERE status = 'in_progress' AND (:every OR lease_until < :now)"
)
_LOST = "id = :id AND status = 'in_progress' AND (:every OR lease_until < :now)"  # a finish in between wins
RECLAIM_FAIL = (
    "UPDATE tasks SET status = 'failure', fail_reason = :reason, finished_at = :now, updated_at = :now, "
    f"lease_owner = NULL, lease_until = NULL, {BUMP} WHERE {_LOST} RETURNING {TASK_COLUMNS}"
)
RECLAIM_REQUEUE = (
    "UPDATE tasks SET status = 'submitted', lease_owner = NULL, lease_until = NULL, updated_at = :now, "
    f"handed_at = :now, {BUMP} WHERE {_LOST} RETURNING {TASK_COLUMNS}"
)
DUE_DELIVERIES = (
    "SELECT o.id, o.url, o.format, o.snapshot, o.attempts, EXISTS (SELECT 1 FROM webhook_outbox AS n "
    "WHERE n.task_id = o.task_id AND n.state = 'pending' AND n.id > o.id) AS newer "
    "FROM webhook_outbox AS o WHERE o.state = 'pending' AND o.next_at <= :now AND o.id = "
    "(SELECT MIN(id) FROM webhook_outbox AS p WHERE p.task_id = o.task_id AND p.state = 'pending') "
    "ORDER BY o.id LIMIT :limit"
)
# the owner's newest tasks; LIST_BEFORE: only those stored before task :before (a range on the index)
LIST_RECENT = f"SELECT {TASK_COLUMNS} FROM tasks WHERE owner IS :owner ORDER BY seq DESC LIMIT :limit"
LIST_BEFORE = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE owner IS :owner "
    "AND seq < (SELECT seq FROM tasks WHERE id = :before) ORDER BY seq DESC LIMIT :limit"
)
CHANGED = (  # the owner's tasks changed after (:since, :after), as the event streams poll them
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE owner IS :owner AND updated_at >= :since "
    "AND (updated_at > :since OR id > :after) ORDER BY updated_at, id LIMIT :limit"
)
# handed_at moves without a version bump: a hand-over is not a change a client sees
STALE_QUEUED = (
    "UPDATE tasks SET handed_at = :now WHERE seq IN (SELECT seq FROM tasks WHERE status = 'submitted' "
    "AND (handed_at IS NULL OR handed_at < :before) ORDER BY priority DESC, seq LIMIT :limit) RETURNING id"
)

# :served is a JSON list of routing labels; rows stored without a label are anyone's, so never unserved
UNSERVED = (
    "SELECT seq, id, model, updated_at FROM tasks WHERE status = 'submitted' AND model IS NOT NULL "
    "AND model NOT IN (SELECT value FROM json_each(:served)) AND updated_at < :before ORDER BY seq LIMIT :limit"
)
FAIL_UNSERVED = (
    "UPDATE tasks SET status = 'failure', fail_reason = :reason, finished_at = :now, updated_at = :now, "
    f"{BUMP} WHERE seq = :seq AND status = 'submitted' RETURNING {TASK_COLUMNS}"
)
ANNOUNCE_WORKER = (
    "INSERT INTO workers (id, models, seen_at) VALUES (?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET models = excluded.models, seen_at = excluded.seen_at"
)


def _grant(conn: sqlite3.Connection, key_id: str, amount: int, now: int) -> None:
    """Credits onto a key, and the ledger line that says so, in the caller's transaction."""
    conn.execute("UPDATE api_keys SET balance = balance + ? WHERE id = ?", (amount, key_id))
    conn.execute(
        "INSERT INTO ledger (key_id, task_id, kind, step, amount, created_at) VALUES (?, NULL, 'grant', 'grant', ?, ?)",
        (key_id, amount, now),
    )


_IN_BATCH = 500  # values bound in one IN (...) list
_QUEUED_COUNT = "SELECT COUNT(*) FROM tasks WHERE owner IS ? AND status IN ('submitted', 'in_progress')"
# Takes the key, or takes it over from a submit whose key lifetime is over; no row changed = a live twin has it.
_KEEP_IDEMPOTENCY_KEY = (
    "INSERT INTO idempotency_keys (owner, key, fingerprint, task_id, created_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (owner, key) DO UPDATE SET fingerprint = excluded.fingerprint, task_id = excluded.task_id, "
    "created_at = excluded.created_at WHERE idempotency_keys.created_at <= ?"
)


class SqliteStore:
    shared = False  # one process owns the data dir: at its start-up, every lease is an orphan

    def __init__(
        self, path: Path | str, *, durable: bool = True, on_transition: TransitionObserver | None = None
    ) -> None:
        self.path = str(path)
        self.synchronous = "FULL" if durable else "NORMAL"
        self._observer = on_transition
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._finished: dict[str, Task] = {}
        self._commit_numbers, self._commits = itertools.count(1), 0
        self._migrate()

    # --- plumbing ------------------------------------------------------------------------------
    @contextmanager
    def _storage_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as error:
            trouble = _TROUBLE.get((getattr(error, "sqlite_errorcode", None) or 0) & 0xFF)  # primary code
            if trouble is None:
                raise
            raise StorageUnavailable(self.path, *trouble) from error

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._storage_errors():
                conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
                try:
                    conn.row_factory = sqlite3.Row
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute(f"PRAGMA synchronous={self.synchronous}")
                    conn.execute("PRAGMA foreign_keys=ON")
                    conn.execute("PRAGMA busy_timeout=30000")
                except BaseException:
                    conn.close()  # half set up: never kept
                    raise
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _drop(self, conn: sqlite3.Connection) -> None:
        """Forget a connection that could not roll back: the thread opens a fresh one next time."""
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        self._local.conn = None
        conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._storage_errors():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            self._local.moves = moves = []
            try:
                yield conn
                conn.execute("COMMIT")
                self._commits = next(self._commit_numbers)  # one process holds the file: every change is ours
            except BaseException:
                # SQLite rolls back by itself after some errors (SQLITE_FULL, I/O): only roll back what is left
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        self._drop(conn)
                raise
        self._announce(moves)

    def change_count(self) -> int:
        return self._commits

    def check_writable(self) -> None:
        """Readiness: a real write, committed (and synced, when durable), that touches no data."""
        with self._write() as conn:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def _moved(self, task: Task, source: Status | None, since: int | None, worker: str | None = None) -> None:
        """Note a status change made in this transaction: the observer hears of it once it commits."""
        if self._observer is not None:
            self._local.moves.append(Transition(task, source, since, worker))

    def _announce(self, moves: list[Transition]) -> None:
        for move in moves:
            try:
                self._observer(move)  # type: ignore[misc]
            except Exception:  # the move is committed: a failing observer must not undo the caller's work
                log.exception("observing task %s moving to %s failed", move.task.id, move.task.status.value)

    def _migrate(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # --- billing helpers (inside a write transaction) ---------------------------------------------
    @staticmethod
    def _charge(conn: sqlite3.Connection, task_id: str, charge: Charge, now: int) -> None:
        updated = conn.execute(
            "UPDATE api_keys SET balance = balance - ? WHERE id = ? AND balance >= ?",
            (charge.amount, charge.key_id, charge.amount),
        ).rowcount
        if not updated:
            row = conn.execute("SELECT balance FROM api_keys WHERE id = ?", (charge.key_id,)).fetchone()
            balance = row["balance"] if row else 0
            raise PaymentRequired(
                f"this costs {charge.amount} credits ({charge.price_key}) but the key has {balance}",
                price=charge.amount,
                balance=balance,
                price_key=charge.price_key,
            )
        conn.execute(
            "INSERT INTO ledger (key_id, task_id, kind, step, price_key, amount, created_at) "
            "VALUES (?, ?, 'charge', ?, ?, ?, ?)",
            (charge.key_id, task_id, charge.step, charge.price_key, charge.amount, now),
        )

    @staticmethod
    def _refund(conn: sqlite3.Connection, task_id: str, now: int) -> None:
        charges = conn.execute(
            "SELECT key_id, SUM(amount) AS total FROM ledger WHERE task_id = ? AND kind = 'charge' GROUP BY key_id",
            (task_id,),
        ).fetchall()
        for row in charges:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO ledger (key_id, task_id, kind, step, amount, created_at) "
                "VALUES (?, ?, 'refund', 'refund', ?, ?)",
                (row["key_id"], task_id, row["total"], now),
            ).rowcount
            if inserted:
                conn.execute("UPDATE api_keys SET balance = balance + ? WHERE id = ?", (row["total"], row["key_id"]))

    @staticmethod
    def _emit(conn: sqlite3.Connection, task_id: str, now: int) -> None:
        """Queue a webhook delivery of the task as it is now, in the transaction that changed it: the
        outbox then holds every change that committed, and nothing that did not."""
        row = conn.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ? AND hook_url IS NOT NULL", (task_id,)
        ).fetchone()
        if row is None:
            return
        conn.execute(
            "INSERT OR IGNORE INTO webhook_outbox (task_id, version, url, format, snapshot, next_at, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (task_id, row["version"], row["hook_url"], row["hook_format"], dumps(list(row)), now, now),
        )
        # an older delivery waiting to be retried is now stale: let it be superseded at once
        conn.execute(
            "UPDATE webhook_outbox SET next_at = ? WHERE task_id = ? AND state = 'pending' AND attempts > 0 "
            "AND version < ?",
            (now, task_id, row["version"]),
        )

    @staticmethod
    def _admit(conn: sqlite3.Connection, owner: str | None, max_queued: int) -> None:
        """Refuse a task just queued for `owner` beyond the cap, in the transaction that queued it
        (raising rolls it back)."""
        if max_queued and conn.execute(_QUEUED_COUNT, (owner,)).fetchone()[0] > max_queued:
            raise QueueFull(max_queued)

    @staticmethod
    def _keep_key(
        conn: sqlite3.Connection, owner: str | None, idempotency: Idempotency | None, task_id: str, now: int
    ) -> None:
        """Record the submit's Idempotency-Key with the change it made; a live twin means it is taken."""
        if idempotency is None:
            return
        taken = not conn.execute(
            _KEEP_IDEMPOTENCY_KEY,
            (owner or "", idempotency.key, idempotency.fingerprint, task_id, now, now - TTL_MS),
        ).rowcount
        if taken:
            raise IdempotencyKeyTaken(idempotency.key)

    # --- tasks ---------------------------------------------------------------------------------
    def insert_task(
        self,
        task: Task,
        charges: Sequence[Charge] = (),
        *,
        max_queued: int = 0,
        idempotency: Idempotency | None = None,
    ) -> None:
        with self._write() as conn:
            try:
                self._insert(conn, task)
            except sqlite3.IntegrityError as error:
                if "tasks.number" in str(error):
                    raise DuplicateNumber(task.number) from None
                raise
            if task.status is Status.SUBMITTED:
                self._admit(conn, task.owner, max_queued)
            self._keep_key(conn, task.owner, idempotency, task.id, task.created_at)
            for charge in charges:
                self._charge(conn, task.id, charge, task.created_at)
            self._emit(conn, task.id, task.created_at)
            self._moved(task, None, None)

    @staticmethod
    def _insert(conn: sqlite3.Connection, task: Task) -> None:
        conn.execute(
            f"INSERT INTO tasks ({INSERT_COLUMNS}) VALUES ({', '.join('?' * INSERT_COLUMN_COUNT)})",
            insert_values(task),
        )

    def get_task(self, task_id: str) -> Task | None:
        task = self._finished.get(task_id)
        if task is not None:
            return task
        row = self._conn().execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            return None
        task = task_from_row(row)
        if task.status.terminal:
            self._remember(task)
        return task

    def get_task_by_number(self, number: int) -> Task | None:
        row = self._conn().execute("SELECT id FROM tasks WHERE number = ?", (number,)).fetchone()
        return self.get_task(row["id"]) if row else None

    def get_tasks(self, *, ids: Sequence[str] = (), numbers: Sequence[int] = ()) -> list[Task]:
        found = {task.id: task for task_id in ids if (task := self._finished.get(task_id)) is not None}
        conn = self._conn()
        for column, values in (("id", [i for i in ids if i not in found]), ("number", list(numbers))):
            for start in range(0, len(values), _IN_BATCH):
                batch = values[start : start + _IN_BATCH]
                rows = conn.execute(
                    f"SELECT {TASK_COLUMNS} FROM tasks WHERE {column} IN ({', '.join('?' * len(batch))})", batch
                )
                for row in rows:  # a task named both by id and by number is listed once
                    task = task_from_row(row)
                    found.setdefault(task.id, task)
        return list(found.values())

    def list_tasks(
        self, owner: str | None, *, statuses: Sequence[Status] = (), limit: int = 100, before: str | None = None
    ) -> list[Task]:
        if statuses:
            marks = ", ".join("?" * len(statuses))
            rows = self._conn().execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE owner IS ? AND status IN ({marks}) "
                "ORDER BY priority DESC, seq LIMIT ?",
                (owner, *(s.value for s in statuses), limit),
            )
        else:
            statement = LIST_RECENT if before is None else LIST_BEFORE
            rows = self._conn().execute(statement, {"owner": owner, "before": before, "limit": limit})
        return [task_from_row(row) for row in rows]

    def changed_tasks(self, owner: str | None, *, since: int, after_id: str = "", limit: int = 500) -> list[Task]:
        rows = self._conn().execute(CHANGED, {"owner": owner, "since": since, "after": after_id, "limit": limit})
        return [task_from_row(row) for row in rows]

    def recent_tasks(self, *, statuses: Sequence[Status] = (), limit: int = 100) -> list[Task]:
        where = f"WHERE status IN ({', '.join('?' * len(statuses))})" if statuses else ""
        rows = self._conn().execute(
            f"SELECT {TASK_COLUMNS} FROM tasks {where} ORDER BY seq DESC LIMIT ?", (*(s.value for s in statuses), limit)
        )
        return [task_from_row(row) for row in rows]

    def _remember(self, task: Task) -> None:
        """Keep a finished task in memory: no statement ever updates a terminal row, so the copy can
        never go stale, and clients poll finished tasks (galleries, list-by-condition) constantly."""
        with self._lock:
            if len(self._finished) >= FINISHED_CACHE_SIZE:
                del self._finished[next(iter(self._finished))]
            self._finished[task.id] = task

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
        with self._write() as conn:
            row = conn.execute(
                "UPDATE tasks SET status = 'submitted', prompt = ?, spec = ?, args = ?, modal_deadline = NULL, "
                f"model = ?, handed_at = ?, updated_at = ?, {BUMP} WHERE id = ? AND status = 'modal' "
                f"AND modal_deadline > ? RETURNING {TASK_COLUMNS}",
                (prompt, dumps(spec.to_json()), dumps(args), routing_label(spec), now, now, task_id, now),
            ).fetchone()
            if row is None:
                return None
            self._admit(conn, row["owner"], max_queued)
            self._keep_key(conn, row["owner"], idempotency, task_id, now)
            if charge is not None:
                self._charge(conn, task_id, charge, now)
            self._emit(conn, task_id, now)
            task = task_from_row(row)
            self._moved(task, Status.MODAL, task.created_at)  # a task is MODAL from its creation
            return task

    def idempotent_submit(self, owner: str | None, key: str, now: int) -> IdempotentSubmit | None:
        row = (
            self._conn()
            .execute(
                "SELECT task_id, fingerprint FROM idempotency_keys WHERE owner = ? AND key = ? AND created_at > ?",
                (owner or "", key, now - TTL_MS),
            )
            .fetchone()
        )
        return IdempotentSubmit(row["task_id"], row["fingerprint"]) if row else None

    def forget_idempotency_keys(self, now: int) -> int:
        with self._write() as conn:
            return conn.execute("DELETE FROM idempotency_keys WHERE created_at <= ?", (now - TTL_MS,)).rowcount

    def claim_next(self, worker: str, now: int, lease_ms: int, *, models: Sequence[str] | None = None) -> Task | None:
        claimed = self._claim(worker, now, lease_ms, limit=1, key=lambda task: None, models=models)
        return claimed[0] if claimed else None

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
        return self._claim(worker, now, lease_ms, limit=limit, key=key, models=models)

    def _claim(
        self,
        worker: str,
        now: int,
        lease_ms: int,
        *,
        limit: int,
        key: Callable[[Task], object | None],
        models: Sequence[str] | None,
    ) -> list[Task]:
        """Claim the head of the queue and the run of equal keys right behind it: no task jumps the queue
        (BEGIN IMMEDIATE: nobody else claims between our read of the head and our updates)."""
        params = {"now": now, "worker": worker, "until": now + lease_ms}
        wanted = models_param(models)
        with self._write() as conn:
            rows = conn.execute(
                CLAIM_HEAD, {"models": dumps(wanted) if wanted is not None else None, "limit": max(limit, 1)}
            ).fetchall()
            claimed: list[Task] = []
            for queued in batch_run([(task_from_row(row), row["seq"]) for row in rows], key):
                task, seq = queued
                row = conn.execute(CLAIM_ONE, {**params, "seq": seq}).fetchone()
                if row is None:  # taken meanwhile: impossible under BEGIN IMMEDIATE, but never claim past it
                    break
                self._emit(conn, task.id, now)
                claimed.append(task_from_row(row))
                # A queued row is not updated while it waits, so its updated_at is when it was queued.
                self._moved(claimed[-1], Status.SUBMITTED, task.updated_at, worker)
            return claimed

    def heartbeat(
        self, task_id: str, worker: str, now: int, lease_ms: int, progress: int, *, preview: bool = False
    ) -> bool | None:
        with self._write() as conn:
            row = conn.execute(
                "UPDATE tasks SET lease_until = ?, updated_at = ?, preview_at = CASE WHEN ? THEN ? ELSE preview_at END "
                "WHERE id = ? AND status = 'in_progress' AND lease_owner = ? RETURNING cancel_requested",
                (now + lease_ms, now, preview, now, task_id, worker),
            ).fetchone()
            if row is None:
                return None
            moved = conn.execute(  # progress only moves forward, and only a move (or a new preview) is news
                f"UPDATE tasks SET progress = MAX(progress, ?), {BUMP} WHERE id = ? AND (progress < ? OR ?)",
                (progress, task_id, progress, preview),
            ).rowcount
            if moved:
                self._emit(conn, task_id, now)
            return bool(row["cancel_requested"])

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
        with self._write() as conn:
            row = conn.execute(
                "UPDATE tasks SET status = ?, progress = CASE WHEN ? THEN 100 ELSE progress END, result = ?, "
                "engine = COALESCE(?, engine), fail_reason = ?, finished_at = ?, updated_at = ?, "
                f"lease_owner = NULL, lease_until = NULL, {BUMP} "
                f"WHERE id = ? AND status = 'in_progress' AND lease_owner = ? RETURNING {TASK_COLUMNS}",
                (
                    status.value,
                    status is Status.SUCCESS,
                    dumps(result.to_json()) if result else None,
                    engine,
                    fail_reason,
                    now,
                    now,
                    task_id,
                    worker,
                ),
            ).fetchone()
            if row is None:
                return None
            if status.refunds:
                self._refund(conn, task_id, now)
            self._emit(conn, task_id, now)
            task = task_from_row(row)
            self._moved(task, Status.IN_PROGRESS, run_since(task), worker)
            return task

    def cancel(self, task_id: str, now: int, reason: str) -> Task | None:
        with self._write() as conn:
            before = conn.execute("SELECT status, updated_at FROM tasks WHERE id = ?", (task_id,)).fetchone()
            row = conn.execute(
                "UPDATE tasks SET status = 'cancelled', fail_reason = ?, finished_at = ?, updated_at = ?, "
                f"modal_deadline = NULL, {BUMP} WHERE id = ? AND status IN {in_list(WAITING)} "
                f"RETURNING {TASK_COLUMNS}",
                (reason, now, now, task_id),
            ).fetchone()
            if row is not None:
                self._refund(conn, task_id, now)
                self._emit(conn, task_id, now)
                task = task_from_row(row)
                self._moved(task, Status(before["status"]), before["updated_at"])  # waiting rows are not updated
                return task
            conn.execute(
                "UPDATE tasks SET cancel_requested = 1, updated_at = ? WHERE id = ? AND status = 'in_progress'",
                (now, task_id),
            )
            row = conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
            return task_from_row(row) if row else None

    def expire_modals(self, now: int, reason: str) -> list[str]:
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE tasks SET status = 'cancelled', fail_reason = ?, finished_at = ?, updated_at = ?, "
                f"modal_deadline = NULL, {BUMP} WHERE status = 'modal' AND modal_deadline <= ? "
                f"RETURNING {TASK_COLUMNS}",
                (reason, now, now, now),
            ).fetchall()
            for row in rows:
                self._refund(conn, row["id"], now)
                self._emit(conn, row["id"], now)
                self._moved(task_from_row(row), Status.MODAL, row["created_at"])
            return [row["id"] for row in rows]

    def reclaim(self, now: int, max_attempts: int, *, every_lease: bool = False) -> Reclaimed:
        with self._write() as conn:
            rows = conn.execute(RECLAIM_EXPIRED, {"every": every_lease, "now": now}).fetchall()
            requeued, failed = [], []
            for row in rows:
                lost = {"id": row["id"], "every": every_lease, "now": now}
                if row["attempts"] >= max_attempts:
                    moved = conn.execute(RECLAIM_FAIL, {**lost, "reason": give_up_reason(row["attempts"])}).fetchone()
                    if moved is None:  # finished meanwhile: its finish stands
                        continue
                    self._refund(conn, row["id"], now)
                    failed.append(row["id"])
                else:
                    moved = conn.execute(RECLAIM_REQUEUE, lost).fetchone()
                    if moved is None:
                        continue
                    requeued.append(row["id"])
                self._emit(conn, row["id"], now)
                task = task_from_row(moved)
                self._moved(task, Status.IN_PROGRESS, run_since(task), row["lease_owner"])
            return Reclaimed(requeued, failed)

    def stale_queued(self, now: int, older_than_ms: int, limit: int = 100) -> list[str]:
        with self._write() as conn:
            rows = conn.execute(STALE_QUEUED, {"now": now, "before": now - older_than_ms, "limit": limit}).fetchall()
            return [row["id"] for row in rows]

    def fail_unserved(
        self, now: int, queued_before: int, served: Sequence[str], reason: Callable[[str], str], limit: int = 100
    ) -> list[str]:
        with self._write() as conn:
            rows = conn.execute(
                UNSERVED, {"served": dumps(list(served)), "before": queued_before, "limit": limit}
            ).fetchall()
            failed = []
            for row in rows:
                params = {"seq": row["seq"], "reason": reason(row["model"]), "now": now}
                moved = conn.execute(FAIL_UNSERVED, params).fetchone()
                if moved is None:  # impossible under BEGIN IMMEDIATE
                    continue
                task = task_from_row(moved)
                self._refund(conn, task.id, now)
                self._emit(conn, task.id, now)
                self._moved(task, Status.SUBMITTED, row["updated_at"])  # a queued row's updated_at: when it was queued
                failed.append(task.id)
            return failed

    def announce_worker(self, worker: str, models: Sequence[str] | None, now: int) -> None:
        with self._write() as conn:
            conn.execute(ANNOUNCE_WORKER, (worker, None if models is None else dumps(list(models)), now))

    def workers_seen(self, since: int) -> list[WorkerSeen]:
        rows = self._conn().execute("SELECT id, models, seen_at FROM workers WHERE seen_at >= ?", (since,))
        return [worker_from_row(row) for row in rows]

    def forget_workers(self, before: int) -> int:
        with self._write() as conn:
            return conn.execute("DELETE FROM workers WHERE seen_at < ?", (before,)).rowcount

    def queued_count(self, owner: str | None) -> int:
        return self._conn().execute(_QUEUED_COUNT, (owner,)).fetchone()[0]

    def queue_position(self, task_id: str) -> int:
        return (
            self._conn()
            .execute(
                "SELECT COUNT(*) FROM tasks AS other, tasks AS me WHERE me.id = ? AND other.status = 'submitted' "
                "AND (other.priority > me.priority OR (other.priority = me.priority AND other.seq < me.seq))",
                (task_id,),
            )
            .fetchone()[0]
        )

    def queue_depth(self) -> dict[tuple[Speed, Status], int]:
        rows = self._conn().execute(
            "SELECT speed, status, COUNT(*) FROM tasks WHERE status IN ('submitted', 'in_progress') "
            "GROUP BY speed, status"
        )
        return {(Speed(speed), Status(status)): count for speed, status, count in rows}

    # --- webhook outbox --------------------------------------------------------------------------
    def due_deliveries(self, now: int, limit: int = 100, *, hold_ms: int = 0) -> list[Delivery]:
        with self._write() as conn:
            rows = conn.execute(DUE_DELIVERIES, {"now": now, "limit": limit}).fetchall()
            if hold_ms and rows:
                conn.execute(
                    f"UPDATE webhook_outbox SET next_at = ? WHERE id IN ({', '.join('?' * len(rows))})",
                    (now + hold_ms, *(row["id"] for row in rows)),
                )
        return [
            Delivery(
                id=row["id"],
                task=task_from_row(orjson.loads(row["snapshot"])),
                hook=Hook(row["url"], row["format"]),
                attempts=row["attempts"],
                newer_pending=bool(row["newer"]),
            )
            for row in rows
        ]

    def settle_delivery(
        self, delivery_id: int, now: int, *, state: str, error: str | None = None, retry_at: int | None = None
    ) -> None:
        """Record an attempt: delivered, superseded, failed for good, or still pending until `retry_at`."""
        with self._write() as conn:
            conn.execute(
                "UPDATE webhook_outbox SET state = ?, attempts = attempts + (? != 'superseded'), last_error = ?, "
                "next_at = COALESCE(?, next_at), sent_at = CASE WHEN ? = 'delivered' THEN ? ELSE sent_at END "
                "WHERE id = ?",
                (state, state, error, retry_at, state, now, delivery_id),
            )

    def outbox(self, task_id: str) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT id, version, url, format, state, attempts, last_error, sent_at FROM webhook_outbox "
            "WHERE task_id = ? ORDER BY id",
            (task_id,),
        )
        return [dict(row) for row in rows]

    # --- keys and ledger ---------------------------------------------------------------------
    def create_key(self, key: ApiKey, key_hash: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO api_keys (id, hash, prefix, name, balance, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (key.id, key_hash, key.prefix, key.name, 0, key.created_at),
            )
            if key.balance:
                _grant(conn, key.id, key.balance, key.created_at)

    def revoke_key(self, key_id: str, now: int) -> ApiKey | None:
        with self._write() as conn:
            conn.execute("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (now, key_id))
            row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return key_from_row(row) if row else None

    def grant(self, key_id: str, amount: int, now: int) -> ApiKey | None:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM api_keys WHERE id = ?", (key_id,)).fetchone() is None:
                return None
            _grant(conn, key_id, amount, now)
            row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return key_from_row(row)

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        row = self._conn().execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = ?", (key_hash,)).fetchone()
        return key_from_row(row) if row else None

    def get_key(self, key_id: str) -> ApiKey | None:
        row = self._conn().execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return key_from_row(row) if row else None

    def list_keys(self) -> list[ApiKey]:
        return [
            key_from_row(row) for row in self._conn().execute(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at")
        ]

    def count_keys(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM api_keys").fetchone()[0]

    def ledger(self, *, key_id: str | None = None, task_id: str | None = None) -> list[LedgerEntry]:
        rows = (
            self._conn()
            .execute(
                f"SELECT {LEDGER_COLUMNS} FROM ledger "
                "WHERE (? IS NULL OR key_id = ?) AND (? IS NULL OR task_id = ?) ORDER BY id",
                (key_id, key_id, task_id, task_id),
            )
            .fetchall()
        )
        return [LedgerEntry(**dict(row)) for row in rows]
