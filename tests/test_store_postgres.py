"""The store contract, run against the PostgreSQL adapter, and what only a shared server raises:
nodes migrating at once, the claim's plan, and a server that is unreachable."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import ClassVar

import psycopg
import pytest

from journeyd.domain.errors import StorageUnavailable
from journeyd.domain.lifecycle import Status
from journeyd.store.pg_changes import TRUSTED_S, LiveTasks
from journeyd.store.postgres import (
    BEFORE,
    CHANGED,
    CLAIM_NEXT,
    LIST_RECENT,
    MIGRATIONS,
    InvalidDatabaseUrl,
    PostgresStore,
    describe,
)
from tests.pg import Cuttable, fresh_database, run_sql
from tests.store_contract import NOW, OpenStore, StoreContract, make_task, race, tid


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database() as dsn:
        yield dsn


class TestPostgresStore(StoreContract):
    options: ClassVar[dict[str, object]] = {}  # how every store of the suite is opened

    @pytest.fixture
    def open_store(self, database: str) -> Iterator[OpenStore]:
        opened: list[PostgresStore] = []

        def open_store(**options: object) -> PostgresStore:
            opened.append(PostgresStore(database, **{**self.options, **options}))  # type: ignore[arg-type]
            return opened[-1]

        yield open_store
        for store in opened:
            store.close()

    @pytest.fixture
    def run_sql(self, database: str) -> Callable[[str], None]:
        return lambda statement: run_sql(database, statement) and None


class TestPostgresStoreOnAnApiNode(TestPostgresStore):
    """The same promises kept with unfinished tasks in memory, as an API node runs the store."""

    options: ClassVar[dict[str, object]] = {"cache_live": True}


def test_other_nodes_share_the_data_so_start_up_never_reclaims_every_lease(database: str) -> None:
    store = PostgresStore(database)
    assert store.shared is True
    store.close()


def test_nodes_starting_together_migrate_once(database: str) -> None:
    stores = race(4, lambda i: PostgresStore(database, pool_size=2))
    try:
        assert all(isinstance(store, PostgresStore) for store in stores), stores
        last = len(MIGRATIONS)
        assert run_sql(database, "SELECT version FROM schema_version") == [(last,)]  # one row, the last migration
        stores[0].insert_task(make_task(1, owner=None))
        assert stores[3].get_task(make_task(1).id) is not None  # one schema, one set of tables
    finally:
        for store in stores:
            if isinstance(store, PostgresStore):
                store.close()


def test_the_claim_walks_the_queue_index_and_skips_locked_rows(database: str) -> None:
    store = PostgresStore(database)
    for i in range(3000):  # mostly finished tasks, as a real table is: the index is the cheap way in
        store.insert_task(make_task(i + 1, owner=None))
    run_sql(database, "UPDATE tasks SET status = 'success' WHERE seq % 100 <> 0")
    run_sql(database, "ANALYZE tasks")
    with psycopg.connect(database) as conn:
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                f"EXPLAIN {CLAIM_NEXT}", {"now": NOW, "worker": "w", "until": NOW + 1, "models": ["default"]}
            )
        )
    assert "tasks_queue" in plan and "LockRows" in plan, plan
    assert "Sort" not in plan, plan  # read in queue order, not sorted
    store.close()


def test_history_pages_and_the_change_feed_read_their_indexes(database: str) -> None:
    store = PostgresStore(database)
    for i in range(3000):  # many owners, as a real table has: each read walks one owner's part of an index
        store.insert_task(make_task(i + 1, owner=f"key{i % 30}", now=NOW + i))
    run_sql(database, "ANALYZE tasks")
    owner = "owner = %(owner)s"
    statements = {
        "tasks_owner_seq": (LIST_RECENT.format(owner=owner, before=BEFORE), {"before": tid(2000), "limit": 50}),
        "tasks_owner_changed": (CHANGED.format(owner=owner), {"since": NOW + 2900, "after": "", "limit": 500}),
    }
    with psycopg.connect(database) as conn:
        for index, (statement, params) in statements.items():
            plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {statement}", {"owner": "key7", **params}))
            assert index in plan, plan
    store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_server_is_named_without_its_password() -> None:
    port = free_port()  # nothing listens here
    with pytest.raises(StorageUnavailable) as refused:
        PostgresStore(f"postgresql://journeyd:s3cret@127.0.0.1:{port}/journeyd")
    assert f"postgresql://journeyd@127.0.0.1:{port}/journeyd" in refused.value.message
    assert "unreachable" in refused.value.message and "s3cret" not in refused.value.message


def test_a_url_that_is_not_a_database_url_says_so() -> None:
    with pytest.raises(InvalidDatabaseUrl):
        PostgresStore("postgresql://[bad")
    assert describe("postgresql://u:pw@db.internal:6543/jd") == "postgresql://u@db.internal:6543/jd"


def test_an_outage_is_a_quick_503_and_the_store_reconnects_by_itself(database: str) -> None:
    link = Cuttable()
    store = PostgresStore(link.dsn(database), pool_size=3, pool_timeout_s=1.0)
    try:
        store.insert_task(make_task(1, owner=None))
        link.cut()  # the server restarts: every connection drops, new ones are refused
        for attempt in (
            lambda: store.get_task(tid(1)),
            lambda: store.claim_next("w", NOW, 60_000),
            store.check_writable,
        ):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable) as down:
                attempt()
            assert time.monotonic() - started < 5, "a call during the outage must fail fast, not hang"
            assert "unreachable" in down.value.message and down.value.status == 503
        for _ in range(3):  # a worker renders on: each heartbeat it cannot write fails at once, not after 5 s
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                store.heartbeat(tid(1), "w", NOW, 60_000, 50)
            assert time.monotonic() - started < 1.5
        link.restore()
        deadline = time.monotonic() + 20  # the pool retries with a backoff: poll, as a client would
        while True:
            try:
                claimed = store.claim_next("w", NOW, 60_000)
                break
            except StorageUnavailable:
                assert time.monotonic() < deadline, "the store did not reconnect by itself"
                time.sleep(0.2)
        assert claimed is not None and claimed.id == tid(1)  # nothing was lost, nothing half-written
    finally:
        link.cut()
        store.close()


# --- an API node's memory of unfinished tasks (pg_changes.py) --------------------------------------


def _eventually(read: Callable[[], object], wanted: Callable[[object], bool], within_s: float = 5.0) -> object:
    """What `read` returns once `wanted` holds: a notification crosses a socket, so it takes a moment."""
    deadline = time.monotonic() + within_s
    while not wanted(value := read()):
        assert time.monotonic() < deadline, f"still {value!r} after {within_s} s"
        time.sleep(0.005)
    return value


def test_an_api_node_sees_each_change_another_node_makes_to_a_task_it_polls(database: str) -> None:
    api, worker = PostgresStore(database, cache_live=True), PostgresStore(database)
    try:
        api.insert_task(make_task(1, owner=None))
        assert api.get_task(tid(1)).status is Status.SUBMITTED  # type: ignore[union-attr]
        worker.claim_next("w", NOW, 60_000)
        _eventually(lambda: api.get_task(tid(1)).status, lambda s: s is Status.IN_PROGRESS)  # type: ignore[union-attr]
        worker.heartbeat(tid(1), "w", NOW + 1, 60_000, 40)
        _eventually(lambda: api.get_task(tid(1)).progress, lambda p: p == 40)  # type: ignore[union-attr]
        count = api.change_count()
        worker.finish(tid(1), "w", Status.SUCCESS, NOW + 2)
        _eventually(api.change_count, lambda now: now != count)  # an event stream on this node reads again
        _eventually(lambda: api.get_task(tid(1)).status, lambda s: s is Status.SUCCESS)  # type: ignore[union-attr]
        assert [t.status for t in api.get_tasks(ids=[tid(1)])] == [Status.SUCCESS]
    finally:
        api.close()
        worker.close()


def test_an_api_node_reads_its_own_changes_at_once(database: str) -> None:
    api, worker = PostgresStore(database, cache_live=True), PostgresStore(database)
    try:
        for i in (1, 2):
            api.insert_task(make_task(i, owner=None))
            api.get_task(tid(i))
        api.cancel(tid(1), NOW, "cancelled by request")
        assert api.get_task(tid(1)).status is Status.CANCELLED  # type: ignore[union-attr]
        worker.claim_next("w", NOW, 60_000)
        _eventually(lambda: api.get_task(tid(2)).status, lambda s: s is Status.IN_PROGRESS)  # type: ignore[union-attr]
        api.cancel(tid(2), NOW, "cancelled by request")  # running: a request the worker reads at its next step
        assert api.get_task(tid(2)).cancel_requested is True  # type: ignore[union-attr]
    finally:
        api.close()
        worker.close()


def test_an_api_node_that_lost_its_connection_never_serves_a_copy_from_before(database: str) -> None:
    link = Cuttable()
    api = PostgresStore(link.dsn(database), cache_live=True, pool_size=2, pool_timeout_s=1.0)
    try:
        api.insert_task(make_task(1, owner=None))
        assert api.get_task(tid(1)).status is Status.SUBMITTED  # type: ignore[union-attr]
        link.cut()  # the change below is announced while this node hears nothing
        run_sql(database, f"UPDATE tasks SET status = 'cancelled' WHERE id = '{tid(1)}'")
        link.restore()
        seen = []
        deadline = time.monotonic() + 20
        while not seen or seen[-1] is not Status.CANCELLED:
            assert time.monotonic() < deadline, seen
            try:
                seen.append(api.get_task(tid(1)).status)  # type: ignore[union-attr]
            except StorageUnavailable:
                time.sleep(0.05)
        assert Status.SUBMITTED not in seen, seen
    finally:
        link.cut()
        api.close()


def test_a_read_that_overlaps_a_change_is_not_kept() -> None:
    now = [100.0]
    live = LiveTasks(clock=lambda: now[0])
    live.trust_until(now[0] + TRUSTED_S)
    task = make_task(1, owner=None)
    mark = live.mark()
    live.changed(task.id)  # announced while the row was being read: the copy may predate it
    live.put(task, mark)
    assert live.get(task.id) is None
    live.put(task, live.mark())
    assert live.get(task.id) == task
    now[0] += TRUSTED_S  # no ping came back since: a silent partition, perhaps
    assert live.get(task.id) is None and live.mark() is None
    live.trust_until(now[0] + TRUSTED_S)
    assert live.get(task.id) == task  # every change before the ping was heard: the copy still holds
    live.forget_all()  # the connection dropped
    assert live.get(task.id) is None


def test_the_memory_keeps_the_tasks_read_last() -> None:
    live = LiveTasks(size=2, clock=lambda: 0.0)
    live.trust_until(1.0)
    tasks = [make_task(i, owner=None) for i in (1, 2, 3)]
    for task in tasks[:2]:
        live.put(task, live.mark())
    live.get(tasks[0].id)
    live.put(tasks[2], live.mark())
    assert [live.get(t.id) is not None for t in tasks] == [True, False, True]
