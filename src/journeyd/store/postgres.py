"""PostgreSQL adapter of the store: the same tasks, queue, keys and ledger, shared by many nodes.

Transactions run at READ COMMITTED, so unlike SQLite's one writer, two nodes' statements really do
interleave. Each statement that moves a task says where its atomicity comes from:
- a conditional UPDATE (`... WHERE status = 'x'`): a second writer waits for the row lock, then
  re-checks the condition on the committed row and changes nothing;
- the claims and the sweeps that several nodes run (claim, reclaim, modal expiry, the hand-over
  sweep, failing the tasks no worker serves) pick their rows with `FOR UPDATE SKIP LOCKED`, so
  concurrent callers take disjoint rows and never wait on each other;
- the per-owner queue cap is counted under a per-owner advisory lock, so concurrent submits on
  different connections cannot both see room for one more.

Connections come from a pool that checks each one before lending it, so after a PostgreSQL restart
the store reconnects by itself; meanwhile each call fails fast with StorageUnavailable (a 503).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from journeyd.domain.errors import NO_SPACE, READ_ONLY, PaymentRequired, StorageUnavailable
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
from journeyd.store.pg_changes import CHANNEL, ChangeListener, LiveTasks
from journeyd.store.rows import (
    BUMP,
    COLUMN,
    FINISHED_CACHE_SIZE,
    INSERT_COLUMN_COUNT,
    INSERT_COLUMNS,
    KEY_COLUMNS,
    LEDGER_COLUMNS,
    TASK_COLUMN_COUNT,
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

MIGRATION_LOCK = 0x6A6F75726E6579  # "journey": one node migrates at a time
OWNER_LOCK = 0x6A6F7572  # "jour": the key space of the per-owner queue-cap locks (with hashtext(owner))
UNREACHABLE = "the database is unreachable"
RECONNECTS = "journeyd reconnects by itself once it is back"

MIGRATIONS = [  # the same steps as the SQLite store's, in PostgreSQL's dialect, and one more
    """
    CREATE TABLE tasks (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
        seed BIGINT NOT NULL,
        price_name TEXT NOT NULL,
        parent_id TEXT,
        source_index INTEGER NOT NULL DEFAULT 1,
        args TEXT NOT NULL DEFAULT '{}',
        metadata TEXT,
        result TEXT,
        engine TEXT,
        fail_reason TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        started_at BIGINT,
        finished_at BIGINT,
        modal_deadline BIGINT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until BIGINT
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
        balance BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE TABLE ledger (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES api_keys (id),
        task_id TEXT,
        kind TEXT NOT NULL CHECK (kind IN ('grant', 'charge', 'refund')),
        step TEXT NOT NULL,
        price_key TEXT,
        amount BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        UNIQUE (task_id, step)
    );
    CREATE INDEX ledger_key ON ledger (key_id);
    CREATE INDEX ledger_task ON ledger (task_id);
    -- readiness writes here: a real commit that touches no data
    CREATE TABLE readiness (id INTEGER PRIMARY KEY CHECK (id = 1), checks BIGINT NOT NULL DEFAULT 0);
    INSERT INTO readiness (id) VALUES (1);
    """,
    """
    ALTER TABLE tasks ADD COLUMN number BIGINT;
    ALTER TABLE tasks ADD COLUMN state TEXT;
    ALTER TABLE tasks ADD COLUMN ref TEXT;
    ALTER TABLE tasks ADD COLUMN hook_url TEXT;
    ALTER TABLE tasks ADD COLUMN hook_format TEXT;
    ALTER TABLE tasks ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
    UPDATE tasks SET number = created_at * 1000 + seq % 1000;
    CREATE UNIQUE INDEX tasks_number ON tasks (number);
    CREATE TABLE webhook_outbox (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        task_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        url TEXT NOT NULL,
        format TEXT NOT NULL,
        snapshot TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'superseded', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at BIGINT NOT NULL,
        last_error TEXT,
        created_at BIGINT NOT NULL,
        sent_at BIGINT,
        UNIQUE (task_id, version)
    );
    CREATE INDEX outbox_due ON webhook_outbox (state, next_at);
    CREATE INDEX outbox_task ON webhook_outbox (task_id, state);
    """,
    """
    ALTER TABLE tasks ADD COLUMN preview_at BIGINT;
    """,
    """
    CREATE TABLE idempotency_keys (
        owner TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        task_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (owner, key)
    );
    CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);
    """,
    """
    ALTER TABLE tasks ADD COLUMN model TEXT;
    ALTER TABLE tasks ADD COLUMN handed_at BIGINT;
    CREATE INDEX tasks_handed ON tasks (handed_at) WHERE status = 'submitted';
    """,
    """
    CREATE INDEX tasks_owner_seq ON tasks (owner, seq);
    CREATE INDEX tasks_owner_changed ON tasks (owner, updated_at);
    """,
    """
    CREATE TABLE workers (id TEXT PRIMARY KEY, models TEXT, seen_at BIGINT NOT NULL);
    CREATE INDEX workers_seen ON workers (seen_at);
    """,
    # PostgreSQL only (SQLite has one process): every change to a task row is announced, once it
    # commits, to the API nodes that keep unfinished tasks in memory (pg_changes.py).
    f"""
    CREATE FUNCTION journeyd_task_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('{CHANNEL}', NEW.id);
        RETURN NULL;
    END $$;
    CREATE TRIGGER tasks_changed AFTER UPDATE ON tasks FOR EACH ROW EXECUTE FUNCTION journeyd_task_changed();
    """,
]

# --- the hot statements, named so a test can EXPLAIN the exact production text ------------------------
_CLAIM = (  # a queued task, leased to %(worker)s until %(until)s
    "status = 'in_progress', started_at = COALESCE(started_at, %(now)s), lease_owner = %(worker)s, "
    f"lease_until = %(until)s, attempts = attempts + 1, updated_at = %(now)s, {BUMP}"
)
# %(models)s: a list of routing labels, or NULL for any; rows from before migration 5 (NULL) are anyone's
_CLAIMABLE = "status = 'submitted' AND (%(models)s::text[] IS NULL OR model IS NULL OR model = ANY(%(models)s::text[]))"
# The head of the queue that no other claimer holds, locked; the outer guard re-checks it is still queued.
# queued_at: a queued row is not updated while it waits, so its updated_at is when it was queued.
CLAIM_NEXT = (
    "WITH head AS (SELECT seq AS head_seq, updated_at AS queued_at FROM tasks "
    f"WHERE {_CLAIMABLE} ORDER BY priority DESC, seq LIMIT 1 FOR UPDATE SKIP LOCKED) "
    f"UPDATE tasks SET {_CLAIM} FROM head WHERE seq = head_seq AND status = 'submitted' "
    f"RETURNING {TASK_COLUMNS}, queued_at"
)
# A batch: the first `limit` queued rows no other claimer holds, locked until this transaction ends.
CLAIM_HEAD = (
    f"SELECT {TASK_COLUMNS}, seq FROM tasks WHERE {_CLAIMABLE} "
    "ORDER BY priority DESC, seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
)
CLAIM_ONE = f"UPDATE tasks SET {_CLAIM} WHERE seq = %(seq)s AND status = 'submitted' RETURNING {TASK_COLUMNS}"
# Rows a finish or a heartbeat holds are skipped: they are not lost, their worker is alive right now.
RECLAIM_EXPIRED = (
    "SELECT id, attempts, lease_owner FROM tasks WHERE status = 'in_progress' "
    "AND (%(every)s OR lease_until < %(now)s) ORDER BY seq FOR UPDATE SKIP LOCKED"
)
_LOST = "id = %(id)s AND status = 'in_progress' AND (%(every)s OR lease_until < %(now)s)"  # a finish first wins
RECLAIM_FAIL = (
    "UPDATE tasks SET status = 'failure', fail_reason = %(reason)s, finished_at = %(now)s, updated_at = %(now)s, "
    f"lease_owner = NULL, lease_until = NULL, {BUMP} WHERE {_LOST} RETURNING {TASK_COLUMNS}"
)
RECLAIM_REQUEUE = (
    "UPDATE tasks SET status = 'submitted', lease_owner = NULL, lease_until = NULL, updated_at = %(now)s, "
    f"handed_at = %(now)s, {BUMP} WHERE {_LOST} RETURNING {TASK_COLUMNS}"
)
EXPIRE_MODALS = (
    "WITH closed AS (SELECT seq AS closed_seq FROM tasks WHERE status = 'modal' AND modal_deadline <= %(now)s "
    "ORDER BY seq FOR UPDATE SKIP LOCKED) "
    "UPDATE tasks SET status = 'cancelled', fail_reason = %(reason)s, finished_at = %(now)s, updated_at = %(now)s, "
    f"modal_deadline = NULL, {BUMP} FROM closed WHERE seq = closed_seq AND status = 'modal' "
    f"RETURNING {TASK_COLUMNS}"
)
DUE_DELIVERIES = (
    "SELECT o.id, o.url, o.format, o.snapshot, o.attempts, EXISTS (SELECT 1 FROM webhook_outbox AS n "
    "WHERE n.task_id = o.task_id AND n.state = 'pending' AND n.id > o.id) AS newer "
    "FROM webhook_outbox AS o WHERE o.state = 'pending' AND o.next_at <= %(now)s AND o.id = "
    "(SELECT MIN(id) FROM webhook_outbox AS p WHERE p.task_id = o.task_id AND p.state = 'pending') "
    "ORDER BY o.id LIMIT %(limit)s FOR UPDATE OF o SKIP LOCKED"  # sweepers on other nodes take other rows
)
# The owner's newest tasks; with {before} = BEFORE, only those stored before task %(before)s (a range on the
# index). {owner} is `_owner_named(owner)`.
LIST_RECENT = f"SELECT {TASK_COLUMNS} FROM tasks WHERE {{owner}}{{before}} ORDER BY seq DESC LIMIT %(limit)s"
BEFORE = " AND seq < (SELECT seq FROM tasks WHERE id = %(before)s)"
CHANGED = (  # the owner's tasks changed after (%(since)s, %(after)s), as the event streams poll them
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE {{owner}} AND updated_at >= %(since)s "
    "AND (updated_at > %(since)s OR id > %(after)s) ORDER BY updated_at, id LIMIT %(limit)s"
)
# Concurrent sweepers lock disjoint rows; handed_at moves without a version bump (no client-visible change).
STALE_QUEUED = (
    "WITH stale AS (SELECT seq AS stale_seq FROM tasks WHERE status = 'submitted' "
    "AND (handed_at IS NULL OR handed_at < %(before)s) ORDER BY priority DESC, seq LIMIT %(limit)s "
    "FOR UPDATE SKIP LOCKED) "
    "UPDATE tasks SET handed_at = %(now)s FROM stale WHERE seq = stale_seq AND status = 'submitted' RETURNING id"
)
# Rows stored without a label are anyone's, so never unserved; rows a claimer holds are skipped (the claim wins).
UNSERVED = (
    "SELECT seq, id, model, updated_at FROM tasks WHERE status = 'submitted' AND model IS NOT NULL "
    "AND NOT (model = ANY(%(served)s::text[])) AND updated_at < %(before)s ORDER BY seq LIMIT %(limit)s "
    "FOR UPDATE SKIP LOCKED"
)
FAIL_UNSERVED = (
    "UPDATE tasks SET status = 'failure', fail_reason = %(reason)s, finished_at = %(now)s, updated_at = %(now)s, "
    f"{BUMP} WHERE seq = %(seq)s AND status = 'submitted' RETURNING {TASK_COLUMNS}"
)
ANNOUNCE_WORKER = (
    "INSERT INTO workers (id, models, seen_at) VALUES (%s, %s, %s) "
    "ON CONFLICT (id) DO UPDATE SET models = excluded.models, seen_at = excluded.seen_at"
)
# Takes the key, or takes it over from a submit whose key lifetime is over; no row changed = a live twin has it.
_KEEP_IDEMPOTENCY_KEY = (
    "INSERT INTO idempotency_keys (owner, key, fingerprint, task_id, created_at) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (owner, key) DO UPDATE SET fingerprint = excluded.fingerprint, task_id = excluded.task_id, "
    "created_at = excluded.created_at WHERE idempotency_keys.created_at <= %s"
)
_RUNNING_OR_QUEUED = "status IN ('submitted', 'in_progress')"


class InvalidDatabaseUrl(ValueError):
    """JOURNEYD_DATABASE_URL is not a PostgreSQL URL psycopg can read."""


def describe(dsn: str) -> str:
    """The server and database a DSN names, without its password: safe to log and to show."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise InvalidDatabaseUrl(
            "the database URL cannot be read; expected postgresql://user:password@host:port/database"
        ) from None
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host') or 'localhost'}{port}/{parts.get('dbname') or ''}"


def _owner_is(owner: str | None) -> tuple[str, tuple[Any, ...]]:
    """`owner IS NOT DISTINCT FROM x`, written so PostgreSQL can use the owner index."""
    return ("owner IS NULL", ()) if owner is None else ("owner = %s", (owner,))


def _owner_named(owner: str | None) -> str:
    """`_owner_is` for statements with named parameters (the owner as `%(owner)s`)."""
    return "owner IS NULL" if owner is None else "owner = %(owner)s"


def _grant(conn: psycopg.Connection, key_id: str, amount: int, now: int) -> None:
    """Credits onto a key, and the ledger line that says so, in the caller's transaction."""
    conn.execute("UPDATE api_keys SET balance = balance + %s WHERE id = %s", (amount, key_id))
    conn.execute(
        "INSERT INTO ledger (key_id, task_id, kind, step, amount, created_at) "
        "VALUES (%s, NULL, 'grant', 'grant', %s, %s)",
        (key_id, amount, now),
    )


# A connection notices a dead server or a cut network by itself, within seconds, instead of waiting on a
# socket that will never speak again: keepalive probes on an idle one, and a statement whose bytes the
# server's host does not acknowledge within 3 s fails (a partition; the server's own work is not timed).
TCP_LIVENESS = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": 3000,
}
HEARTBEAT_WAIT_S = 0.2  # a heartbeat's wait for a pooled connection (a worker's pool is never busy)
RECHECK_IDLE_S = 1.0  # a connection back in the pool this recently is lent without a check


def _note_return(conn: psycopg.Connection) -> None:
    conn._journeyd_returned = time.monotonic()  # type: ignore[attr-defined]


def _check_if_idle(conn: psycopg.Connection) -> None:
    """The pool's check before it lends a connection: a round trip, but only for one that sat idle.
    A server restart breaks idle connections; one that just did its work is alive, and checking it
    would add a round trip to every read (a third of an unfinished-task poll). A break in between is
    caught anyway: the statement fails, the request gets its 503, and the pool drops the connection."""
    if time.monotonic() - getattr(conn, "_journeyd_returned", -math.inf) > RECHECK_IDLE_S:
        ConnectionPool.check_connection(conn)


class PostgresStore:
    shared = True  # other nodes' workers hold leases: only leases that ran out are orphans

    def __init__(
        self,
        dsn: str,
        *,
        on_transition: TransitionObserver | None = None,
        pool_size: int = 10,
        connect_timeout_s: int = 3,
        pool_timeout_s: float = 5.0,
        statement_timeout_ms: int = 30_000,
        prepare_threshold: int | None = 5,
        cache_live: bool = False,
    ) -> None:
        """`prepare_threshold=None` turns psycopg's server-side prepared statements off, for a PgBouncer
        older than 1.21 in transaction mode. `cache_live` keeps unfinished tasks in memory, each until
        PostgreSQL announces a change to it (pg_changes.py): for API nodes, which clients poll; it
        takes one more connection, which listens."""
        self.place = describe(dsn)
        self._observer = on_transition
        self._local = threading.local()
        self._lock = threading.Lock()
        self._finished: dict[str, Task] = {}
        # a statement that waits longer (a lock held by a stuck node, a server in trouble) fails: nothing hangs
        connect = {
            "connect_timeout": connect_timeout_s,
            "options": f"-c statement_timeout={statement_timeout_ms}",
            "prepare_threshold": prepare_threshold,
            **TCP_LIVENESS,
        }
        try:
            # The first connection is our own: a bad password or a missing database is reported as itself.
            with psycopg.connect(dsn, autocommit=False, **connect) as conn:
                self._migrate(conn)
        except psycopg.OperationalError as error:
            raise StorageUnavailable(
                self.place,
                f"{UNREACHABLE} ({_first_line(error)})",
                "start it, or fix the database URL",
                doing="reach",
            ) from None
        self._pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            timeout=pool_timeout_s,
            check=_check_if_idle,  # a connection broken by a restart is replaced, not lent
            reset=_note_return,
            kwargs={**connect, "autocommit": False},
            name="journeyd",
            open=True,
        )
        self._live: LiveTasks | None = None
        self._listener: ChangeListener | None = None
        if cache_live:
            self._live = LiveTasks()
            self._listener = ChangeListener(dsn, self._live, connect)
            self._listener.start()

    # --- plumbing ------------------------------------------------------------------------------
    @contextmanager
    def _connection(self, wait_s: float | None = None) -> Iterator[psycopg.Connection]:
        """A pooled connection in a transaction, committed when the block ends (rolled back if it raises);
        `wait_s`: how long to wait for one (default: the pool's timeout)."""
        try:
            with self._pool.connection(timeout=wait_s) as conn:
                yield conn
        except psycopg.errors.DiskFull as error:
            raise StorageUnavailable(self.place, "the database server's disk is full", NO_SPACE) from error
        except psycopg.errors.ReadOnlySqlTransaction as error:
            raise StorageUnavailable(self.place, "the database is read-only (a standby?)", READ_ONLY) from error
        except psycopg.errors.TransactionRollback:
            raise  # a deadlock or serialisation failure is a bug of ours, not the server's trouble
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            # includes PoolTimeout, AdminShutdown, a statement timeout and a connection cut mid-statement
            raise StorageUnavailable(self.place, UNREACHABLE, RECONNECTS, doing="reach") from error

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection]:
        """A pooled connection in autocommit, for reads: each is one statement, consistent by itself,
        so it needs no BEGIN and COMMIT, two round trips of every poll."""
        with self._connection() as conn:
            conn.autocommit = True
            try:
                yield conn
            finally:
                conn.autocommit = False

    @contextmanager
    def _write(self, wait_s: float | None = None) -> Iterator[psycopg.Connection]:
        self._local.moves = moves = []
        self._local.touched = touched = []
        with self._connection(wait_s) as conn:
            yield conn
        if self._live is not None:  # this node reads its own writes at once, not after the notification
            for task_id in touched:
                self._live.changed(task_id)
        self._announce(moves)  # only after the commit

    def check_writable(self) -> None:
        """Readiness: a real committed write that touches no data."""
        with self._write() as conn:
            conn.execute("UPDATE readiness SET checks = checks + 1 WHERE id = 1")

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

    def _migrate(self, conn: psycopg.Connection) -> None:
        """Bring the schema up to date in one transaction, under a lock: nodes starting together take turns,
        and each later one finds the work done."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if version > len(MIGRATIONS):
                raise RuntimeError(
                    f"the database {self.place} has schema version {version}, newer than this journeyd knows "
                    f"({len(MIGRATIONS)}): upgrade journeyd"
                )
            for script in MIGRATIONS[version:]:
                conn.execute(script)  # several statements, no parameters: one simple query
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (len(MIGRATIONS),))
            else:
                conn.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS),))

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        self._pool.close()

    # --- billing helpers (inside a write transaction) ---------------------------------------------
    @staticmethod
    def _charge(conn: psycopg.Connection, task_id: str, charge: Charge, now: int) -> None:
        # the row lock makes the check and the debit one step: concurrent charges cannot overdraw
        updated = conn.execute(
            "UPDATE api_keys SET balance = balance - %s WHERE id = %s AND balance >= %s",
            (charge.amount, charge.key_id, charge.amount),
        ).rowcount
        if not updated:
            row = conn.execute("SELECT balance FROM api_keys WHERE id = %s", (charge.key_id,)).fetchone()
            balance = row[0] if row else 0
            raise PaymentRequired(
                f"this costs {charge.amount} credits ({charge.price_key}) but the key has {balance}",
                price=charge.amount,
                balance=balance,
                price_key=charge.price_key,
            )
        conn.execute(
            "INSERT INTO ledger (key_id, task_id, kind, step, price_key, amount, created_at) "
            "VALUES (%s, %s, 'charge', %s, %s, %s, %s)",
            (charge.key_id, task_id, charge.step, charge.price_key, charge.amount, now),
        )

    @staticmethod
    def _refund(conn: psycopg.Connection, task_id: str, now: int) -> None:
        charges = conn.execute(
            "SELECT key_id, SUM(amount)::BIGINT FROM ledger WHERE task_id = %s AND kind = 'charge' GROUP BY key_id",
            (task_id,),
        ).fetchall()
        for key_id, total in charges:
            inserted = conn.execute(  # unique (task_id, step): a second refund of one task is never written
                "INSERT INTO ledger (key_id, task_id, kind, step, amount, created_at) "
                "VALUES (%s, %s, 'refund', 'refund', %s, %s) ON CONFLICT DO NOTHING",
                (key_id, task_id, total, now),
            ).rowcount
            if inserted:
                conn.execute("UPDATE api_keys SET balance = balance + %s WHERE id = %s", (total, key_id))

    def _emit(self, conn: psycopg.Connection, row: Sequence[Any], now: int) -> None:
        """Queue a webhook delivery of the task as it is now (`row`: its columns as the change's RETURNING
        gave them, so no second read), in the transaction that changed it: the outbox then holds every
        change that committed, and nothing that did not."""
        task_id = row[COLUMN["id"]]
        self._local.touched.append(task_id)
        if row[COLUMN["hook_url"]] is None:
            return
        row = row[:TASK_COLUMN_COUNT]
        version = row[COLUMN["version"]]
        conn.execute(
            "INSERT INTO webhook_outbox (task_id, version, url, format, snapshot, next_at, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (task_id, version, row[COLUMN["hook_url"]], row[COLUMN["hook_format"]], dumps(list(row)), now, now),
        )
        # an older delivery waiting to be retried is now stale: let it be superseded at once
        conn.execute(
            "UPDATE webhook_outbox SET next_at = %s WHERE task_id = %s AND state = 'pending' AND attempts > 0 "
            "AND version < %s",
            (now, task_id, version),
        )

    @staticmethod
    def _admit(conn: psycopg.Connection, owner: str | None, max_queued: int) -> None:
        """Refuse a task just queued for `owner` beyond the cap, in the transaction that queued it
        (raising rolls it back). The lock makes concurrent submits of one owner count one at a time:
        the count runs after it, so it sees every earlier submit that committed."""
        if not max_queued:
            return
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (OWNER_LOCK, owner or ""))
        where, params = _owner_is(owner)
        count = conn.execute(f"SELECT COUNT(*) FROM tasks WHERE {where} AND {_RUNNING_OR_QUEUED}", params).fetchone()
        if count[0] > max_queued:  # type: ignore[index]
            raise QueueFull(max_queued)

    @staticmethod
    def _keep_key(
        conn: psycopg.Connection, owner: str | None, idempotency: Idempotency | None, task_id: str, now: int
    ) -> None:
        """Record the submit's Idempotency-Key with the change it made; a live twin means it is taken.
        A concurrent twin waits for ours to commit, then finds the key live and changes nothing."""
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
                row = conn.execute(
                    f"INSERT INTO tasks ({INSERT_COLUMNS}) VALUES ({', '.join(['%s'] * INSERT_COLUMN_COUNT)}) "
                    f"RETURNING {TASK_COLUMNS}",
                    insert_values(task),
                ).fetchone()
            except psycopg.errors.UniqueViolation as error:
                if error.diag.constraint_name == "tasks_number":
                    raise DuplicateNumber(task.number) from None
                raise
            if task.status is Status.SUBMITTED:
                self._admit(conn, task.owner, max_queued)
            self._keep_key(conn, task.owner, idempotency, task.id, task.created_at)
            for charge in charges:
                self._charge(conn, task.id, charge, task.created_at)
            self._emit(conn, row, task.created_at)
            self._moved(task, None, None)

    def get_task(self, task_id: str) -> Task | None:
        if (task := self._cached(task_id)) is not None:
            return task
        mark = self._live.mark() if self._live is not None else None
        with self._read() as conn:
            row = conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = %s", (task_id,)).fetchone()
        return self._keep(task_from_row(row), mark) if row else None

    def _cached(self, task_id: str) -> Task | None:
        task = self._finished.get(task_id)
        if task is None and self._live is not None:
            task = self._live.get(task_id)
        return task

    def _keep(self, task: Task, mark: int | None) -> Task:
        """A task just read, kept for the next read: for good once finished, else while nothing changes it."""
        if task.status.terminal:
            self._remember(task)
        elif self._live is not None:
            self._live.put(task, mark)
        return task

    def get_task_by_number(self, number: int) -> Task | None:
        with self._read() as conn:
            row = conn.execute("SELECT id FROM tasks WHERE number = %s", (number,)).fetchone()
        return self.get_task(row[0]) if row else None

    def get_tasks(self, *, ids: Sequence[str] = (), numbers: Sequence[int] = ()) -> list[Task]:
        found = {task.id: task for task_id in ids if (task := self._cached(task_id)) is not None}
        wanted = [i for i in ids if i not in found]
        if not wanted and not numbers:
            return list(found.values())
        mark = self._live.mark() if self._live is not None else None
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY(%s::text[]) OR number = ANY(%s::bigint[])",
                (wanted, list(numbers)),
            ).fetchall()
        for row in rows:  # a task named both by id and by number is listed once
            task = task_from_row(row)
            found.setdefault(task.id, self._keep(task, mark))
        return list(found.values())

    def list_tasks(
        self, owner: str | None, *, statuses: Sequence[Status] = (), limit: int = 100, before: str | None = None
    ) -> list[Task]:
        where, params = _owner_is(owner)
        with self._read() as conn:
            if statuses:
                rows = conn.execute(
                    f"SELECT {TASK_COLUMNS} FROM tasks WHERE {where} AND status = ANY(%s::text[]) "
                    "ORDER BY priority DESC, seq LIMIT %s",
                    (*params, [s.value for s in statuses], limit),
                ).fetchall()
            else:
                rows = conn.execute(
                    LIST_RECENT.format(owner=_owner_named(owner), before="" if before is None else BEFORE),
                    {"owner": owner, "before": before, "limit": limit},
                ).fetchall()
        return [task_from_row(row) for row in rows]

    def recent_tasks(self, *, statuses: Sequence[Status] = (), limit: int = 100) -> list[Task]:
        where = "WHERE status = ANY(%s::text[])" if statuses else ""
        params: tuple[Any, ...] = ([s.value for s in statuses],) if statuses else ()
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks {where} ORDER BY seq DESC LIMIT %s", (*params, limit)
            ).fetchall()
        return [task_from_row(row) for row in rows]

    def change_count(self) -> int | None:
        return self._live.mark() if self._live is not None else None

    def changed_tasks(self, owner: str | None, *, since: int, after_id: str = "", limit: int = 500) -> list[Task]:
        with self._read() as conn:
            rows = conn.execute(
                CHANGED.format(owner=_owner_named(owner)),
                {"owner": owner, "since": since, "after": after_id, "limit": limit},
            ).fetchall()
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
                "UPDATE tasks SET status = 'submitted', prompt = %s, spec = %s, args = %s, modal_deadline = NULL, "
                f"model = %s, handed_at = %s, updated_at = %s, {BUMP} WHERE id = %s AND status = 'modal' "
                f"AND modal_deadline > %s RETURNING {TASK_COLUMNS}",
                (prompt, dumps(spec.to_json()), dumps(args), routing_label(spec), now, now, task_id, now),
            ).fetchone()
            if row is None:
                return None
            owner = row[COLUMN["owner"]]
            self._admit(conn, owner, max_queued)
            self._keep_key(conn, owner, idempotency, task_id, now)
            if charge is not None:
                self._charge(conn, task_id, charge, now)
            self._emit(conn, row, now)
            task = task_from_row(row)
            self._moved(task, Status.MODAL, task.created_at)  # a task is MODAL from its creation
            return task

    def idempotent_submit(self, owner: str | None, key: str, now: int) -> IdempotentSubmit | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT task_id, fingerprint FROM idempotency_keys WHERE owner = %s AND key = %s AND created_at > %s",
                (owner or "", key, now - TTL_MS),
            ).fetchone()
        return IdempotentSubmit(row[0], row[1]) if row else None

    def forget_idempotency_keys(self, now: int) -> int:
        with self._write() as conn:
            return conn.execute("DELETE FROM idempotency_keys WHERE created_at <= %s", (now - TTL_MS,)).rowcount

    def claim_next(self, worker: str, now: int, lease_ms: int, *, models: Sequence[str] | None = None) -> Task | None:
        with self._write() as conn:
            row = conn.execute(
                CLAIM_NEXT, {"now": now, "worker": worker, "until": now + lease_ms, "models": models_param(models)}
            ).fetchone()
            if row is None:
                return None
            task = task_from_row(row)
            self._emit(conn, row, now)
            self._moved(task, Status.SUBMITTED, row[-1], worker)
            return task

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
        if limit <= 1:  # one statement, without reading the queue first
            task = self.claim_next(worker, now, lease_ms, models=models)
            return [task] if task else []
        params = {"now": now, "worker": worker, "until": now + lease_ms}
        with self._write() as conn:
            # Locked until we commit; rows other claimers hold are skipped, so the run we take is the head of
            # what is free, and rows locked here beyond the run are free again at commit.
            rows = conn.execute(CLAIM_HEAD, {"models": models_param(models), "limit": limit}).fetchall()
            claimed: list[Task] = []
            for task, seq in batch_run([(task_from_row(row), row[-1]) for row in rows], key):
                row = conn.execute(CLAIM_ONE, {**params, "seq": seq}).fetchone()
                if row is None:  # cannot happen while we hold the lock; never claim past a gap
                    break
                self._emit(conn, row, now)
                claimed.append(task_from_row(row))
                self._moved(claimed[-1], Status.SUBMITTED, task.updated_at, worker)
            return claimed

    def heartbeat(
        self, task_id: str, worker: str, now: int, lease_ms: int, progress: int, *, preview: bool = False
    ) -> bool | None:
        # No waiting for a connection: while the server is unreachable a heartbeat fails at once, and the
        # worker renders on instead of stalling its device for the pool's timeout at every step it writes.
        with self._write(HEARTBEAT_WAIT_S) as conn:
            row = conn.execute(
                "UPDATE tasks SET lease_until = %(until)s, updated_at = %(now)s, "
                "preview_at = CASE WHEN %(preview)s THEN %(now)s ELSE preview_at END "
                "WHERE id = %(id)s AND status = 'in_progress' AND lease_owner = %(worker)s RETURNING cancel_requested",
                {"until": now + lease_ms, "now": now, "preview": preview, "id": task_id, "worker": worker},
            ).fetchone()
            if row is None:
                return None
            moved = conn.execute(  # progress only moves forward, and only a move (or a new preview) is news
                f"UPDATE tasks SET progress = GREATEST(progress, %(progress)s), {BUMP} "
                f"WHERE id = %(id)s AND (progress < %(progress)s OR %(preview)s) RETURNING {TASK_COLUMNS}",
                {"progress": progress, "id": task_id, "preview": preview},
            ).fetchone()
            if moved is not None:
                self._emit(conn, moved, now)
            return bool(row[0])

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
                "UPDATE tasks SET status = %(status)s, progress = CASE WHEN %(success)s THEN 100 ELSE progress END, "
                "result = %(result)s, engine = COALESCE(%(engine)s, engine), fail_reason = %(reason)s, "
                f"finished_at = %(now)s, updated_at = %(now)s, lease_owner = NULL, lease_until = NULL, {BUMP} "
                f"WHERE id = %(id)s AND status = 'in_progress' AND lease_owner = %(worker)s RETURNING {TASK_COLUMNS}",
                {
                    "status": status.value,
                    "success": status is Status.SUCCESS,
                    "result": dumps(result.to_json()) if result else None,
                    "engine": engine,
                    "reason": fail_reason,
                    "now": now,
                    "id": task_id,
                    "worker": worker,
                },
            ).fetchone()
            if row is None:
                return None
            if status.refunds:
                self._refund(conn, task_id, now)
            self._emit(conn, row, now)
            task = task_from_row(row)
            self._moved(task, Status.IN_PROGRESS, run_since(task), worker)
            return task

    def cancel(self, task_id: str, now: int, reason: str) -> Task | None:
        with self._write() as conn:
            # locked, so the status we report as the source is the one we moved from
            before = conn.execute(
                "SELECT status, updated_at FROM tasks WHERE id = %s FOR UPDATE", (task_id,)
            ).fetchone()
            if before is None:
                return None
            row = conn.execute(
                "UPDATE tasks SET status = 'cancelled', fail_reason = %s, finished_at = %s, updated_at = %s, "
                f"modal_deadline = NULL, {BUMP} WHERE id = %s AND status IN {in_list(WAITING)} "
                f"RETURNING {TASK_COLUMNS}",
                (reason, now, now, task_id),
            ).fetchone()
            if row is not None:
                self._refund(conn, task_id, now)
                self._emit(conn, row, now)
                task = task_from_row(row)
                self._moved(task, Status(before[0]), before[1])  # waiting rows are not updated
                return task
            conn.execute(
                "UPDATE tasks SET cancel_requested = 1, updated_at = %s WHERE id = %s AND status = 'in_progress'",
                (now, task_id),
            )
            self._local.touched.append(task_id)
            row = conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = %s", (task_id,)).fetchone()
            return task_from_row(row) if row else None

    def expire_modals(self, now: int, reason: str) -> list[str]:
        with self._write() as conn:
            rows = conn.execute(EXPIRE_MODALS, {"now": now, "reason": reason}).fetchall()
            for row in rows:
                task = task_from_row(row)
                self._refund(conn, task.id, now)
                self._emit(conn, row, now)
                self._moved(task, Status.MODAL, task.created_at)
            return [row[0] for row in rows]

    def reclaim(self, now: int, max_attempts: int, *, every_lease: bool = False) -> Reclaimed:
        with self._write() as conn:
            rows = conn.execute(RECLAIM_EXPIRED, {"every": every_lease, "now": now}).fetchall()
            requeued, failed = [], []
            for task_id, attempts, lease_owner in rows:
                lost = {"id": task_id, "every": every_lease, "now": now}
                if attempts >= max_attempts:
                    moved = conn.execute(RECLAIM_FAIL, {**lost, "reason": give_up_reason(attempts)}).fetchone()
                    if moved is None:  # finished meanwhile: its finish stands
                        continue
                    self._refund(conn, task_id, now)
                    failed.append(task_id)
                else:
                    moved = conn.execute(RECLAIM_REQUEUE, lost).fetchone()
                    if moved is None:
                        continue
                    requeued.append(task_id)
                self._emit(conn, moved, now)
                task = task_from_row(moved)
                self._moved(task, Status.IN_PROGRESS, run_since(task), lease_owner)
            return Reclaimed(requeued, failed)

    def stale_queued(self, now: int, older_than_ms: int, limit: int = 100) -> list[str]:
        with self._write() as conn:
            rows = conn.execute(STALE_QUEUED, {"now": now, "before": now - older_than_ms, "limit": limit}).fetchall()
            return [row[0] for row in rows]

    def fail_unserved(
        self, now: int, queued_before: int, served: Sequence[str], reason: Callable[[str], str], limit: int = 100
    ) -> list[str]:
        with self._write() as conn:
            rows = conn.execute(UNSERVED, {"served": list(served), "before": queued_before, "limit": limit}).fetchall()
            failed = []
            for seq, task_id, model, queued_at in rows:
                row = conn.execute(FAIL_UNSERVED, {"seq": seq, "reason": reason(model), "now": now}).fetchone()
                if row is None:  # cannot happen while we hold the lock
                    continue
                task = task_from_row(row)
                self._refund(conn, task_id, now)
                self._emit(conn, row, now)
                self._moved(task, Status.SUBMITTED, queued_at)  # a queued row's updated_at: when it was queued
                failed.append(task_id)
            return failed

    def announce_worker(self, worker: str, models: Sequence[str] | None, now: int) -> None:
        with self._write() as conn:
            conn.execute(ANNOUNCE_WORKER, (worker, None if models is None else dumps(list(models)), now))

    def workers_seen(self, since: int) -> list[WorkerSeen]:
        with self._read() as conn:
            rows = conn.execute("SELECT id, models, seen_at FROM workers WHERE seen_at >= %s", (since,)).fetchall()
        return [worker_from_row(row) for row in rows]

    def forget_workers(self, before: int) -> int:
        with self._write() as conn:
            return conn.execute("DELETE FROM workers WHERE seen_at < %s", (before,)).rowcount

    def queued_count(self, owner: str | None) -> int:
        where, params = _owner_is(owner)
        with self._read() as conn:
            row = conn.execute(f"SELECT COUNT(*) FROM tasks WHERE {where} AND {_RUNNING_OR_QUEUED}", params).fetchone()
        return row[0]  # type: ignore[index]

    def queue_position(self, task_id: str) -> int:
        with self._read() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM tasks AS other, tasks AS me WHERE me.id = %s AND other.status = 'submitted' "
                "AND (other.priority > me.priority OR (other.priority = me.priority AND other.seq < me.seq))",
                (task_id,),
            ).fetchone()
        return row[0]  # type: ignore[index]

    def queue_depth(self) -> dict[tuple[Speed, Status], int]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT speed, status, COUNT(*) FROM tasks WHERE {_RUNNING_OR_QUEUED} GROUP BY speed, status"
            ).fetchall()
        return {(Speed(speed), Status(status)): count for speed, status, count in rows}

    # --- webhook outbox --------------------------------------------------------------------------
    def due_deliveries(self, now: int, limit: int = 100, *, hold_ms: int = 0) -> list[Delivery]:
        with self._write() as conn:
            rows = conn.execute(DUE_DELIVERIES, {"now": now, "limit": limit}).fetchall()
            if hold_ms and rows:
                conn.execute(
                    "UPDATE webhook_outbox SET next_at = %s WHERE id = ANY(%s)", (now + hold_ms, [r[0] for r in rows])
                )
        return [
            Delivery(
                id=delivery_id,
                task=task_from_row(orjson.loads(snapshot)),
                hook=Hook(url, hook_format),
                attempts=attempts,
                newer_pending=bool(newer),
            )
            for delivery_id, url, hook_format, snapshot, attempts, newer in rows
        ]

    def settle_delivery(
        self, delivery_id: int, now: int, *, state: str, error: str | None = None, retry_at: int | None = None
    ) -> None:
        """Record an attempt: delivered, superseded, failed for good, or still pending until `retry_at`."""
        with self._write() as conn:
            conn.execute(
                "UPDATE webhook_outbox SET state = %(state)s, "
                "attempts = attempts + CASE WHEN %(state)s = 'superseded' THEN 0 ELSE 1 END, last_error = %(error)s, "
                "next_at = COALESCE(%(retry_at)s, next_at), "
                "sent_at = CASE WHEN %(state)s = 'delivered' THEN %(now)s ELSE sent_at END WHERE id = %(id)s",
                {"state": state, "error": error, "retry_at": retry_at, "now": now, "id": delivery_id},
            )

    def outbox(self, task_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = (
                conn.cursor(row_factory=dict_row)
                .execute(
                    "SELECT id, version, url, format, state, attempts, last_error, sent_at FROM webhook_outbox "
                    "WHERE task_id = %s ORDER BY id",
                    (task_id,),
                )
                .fetchall()
            )
        return rows

    # --- keys and ledger ---------------------------------------------------------------------
    def create_key(self, key: ApiKey, key_hash: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO api_keys (id, hash, prefix, name, balance, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (key.id, key_hash, key.prefix, key.name, 0, key.created_at),
            )
            if key.balance:
                _grant(conn, key.id, key.balance, key.created_at)

    def revoke_key(self, key_id: str, now: int) -> ApiKey | None:
        with self._write() as conn:
            row = conn.execute(
                f"UPDATE api_keys SET revoked_at = COALESCE(revoked_at, %s) WHERE id = %s RETURNING {KEY_COLUMNS}",
                (now, key_id),
            ).fetchone()
        return key_from_row(row) if row else None

    def grant(self, key_id: str, amount: int, now: int) -> ApiKey | None:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM api_keys WHERE id = %s", (key_id,)).fetchone() is None:
                return None
            _grant(conn, key_id, amount, now)
            row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = %s", (key_id,)).fetchone()
        return key_from_row(row)  # type: ignore[arg-type]

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        with self._read() as conn:
            row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = %s", (key_hash,)).fetchone()
        return key_from_row(row) if row else None

    def get_key(self, key_id: str) -> ApiKey | None:
        with self._read() as conn:
            row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = %s", (key_id,)).fetchone()
        return key_from_row(row) if row else None

    def list_keys(self) -> list[ApiKey]:
        with self._read() as conn:
            rows = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id").fetchall()
        return [key_from_row(row) for row in rows]

    def count_keys(self) -> int:
        with self._read() as conn:
            row = conn.execute("SELECT COUNT(*) FROM api_keys").fetchone()
        return row[0]  # type: ignore[index]

    def ledger(self, *, key_id: str | None = None, task_id: str | None = None) -> list[LedgerEntry]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {LEDGER_COLUMNS} FROM ledger WHERE (%(key)s::text IS NULL OR key_id = %(key)s) "
                "AND (%(task)s::text IS NULL OR task_id = %(task)s) ORDER BY id",
                {"key": key_id, "task": task_id},
            ).fetchall()
        return [LedgerEntry(*row) for row in rows]


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
