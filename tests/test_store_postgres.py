"""The store contract, run against the PostgreSQL adapter, and what only a shared server raises:
nodes migrating at once, the claim's plan, and a server that is unreachable."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from journeyd.domain.errors import StorageUnavailable
from journeyd.store.postgres import CLAIM_NEXT, InvalidDatabaseUrl, PostgresStore, describe
from tests.pg import Cuttable, fresh_database, run_sql
from tests.store_contract import NOW, OpenStore, StoreContract, make_task, race, tid


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database() as dsn:
        yield dsn


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def open_store(self, database: str) -> Iterator[OpenStore]:
        opened: list[PostgresStore] = []

        def open_store(**options: object) -> PostgresStore:
            opened.append(PostgresStore(database, **options))  # type: ignore[arg-type]
            return opened[-1]

        yield open_store
        for store in opened:
            store.close()

    @pytest.fixture
    def run_sql(self, database: str) -> Callable[[str], None]:
        return lambda statement: run_sql(database, statement) and None


def test_other_nodes_share_the_data_so_start_up_never_reclaims_every_lease(database: str) -> None:
    store = PostgresStore(database)
    assert store.shared is True
    store.close()


def test_nodes_starting_together_migrate_once(database: str) -> None:
    stores = race(4, lambda i: PostgresStore(database, pool_size=2))
    try:
        assert all(isinstance(store, PostgresStore) for store in stores), stores
        assert run_sql(database, "SELECT version FROM schema_version") == [(6,)]  # one row, the last migration
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
