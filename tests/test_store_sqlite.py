"""The store contract, run against the SQLite adapter."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from journeyd.store.rows import TASK_COLUMN_COUNT, TASK_COLUMNS, insert_values
from journeyd.store.sqlite import CHANGED, CLAIM_HEAD, LIST_BEFORE, MIGRATIONS, SqliteStore
from tests.store_contract import NOW, OpenStore, StoreContract, make_task, tid


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        return tmp_path / "journeyd.sqlite3"

    @pytest.fixture
    def open_store(self, path: Path) -> Iterator[OpenStore]:
        opened: list[SqliteStore] = []

        def open_store(**options: object) -> SqliteStore:
            opened.append(SqliteStore(path, **options))  # type: ignore[arg-type]
            return opened[-1]

        yield open_store
        for store in opened:
            store.close()

    @pytest.fixture
    def run_sql(self, path: Path) -> Callable[[str], None]:
        def run(statement: str) -> None:
            conn = sqlite3.connect(path)
            try:
                with conn:
                    conn.execute(statement)
            finally:
                conn.close()

        return run


def test_one_process_owns_the_data_so_start_up_may_reclaim_every_lease(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3")
    assert store.shared is False
    store.close()


def test_a_database_from_before_routing_labels_keeps_its_queue(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:4]:  # a database written by journeyd before migration 5, with a task queued
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 4")
    marks = ", ".join("?" * TASK_COLUMN_COUNT)
    conn.execute(
        f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({marks})",
        insert_values(make_task(1, owner=None, prompt="a fox --niji 6"))[:TASK_COLUMN_COUNT],
    )
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    assert store.stale_queued(NOW, older_than_ms=5_000) == [tid(1)]  # never handed over: rung again
    claimed = store.claim_next("w", NOW, 60_000, models=["default"])  # no label: anyone's
    assert claimed is not None and claimed.id == tid(1)
    store.close()


def test_the_claim_reads_the_queue_index(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3")
    plan = " ".join(
        str(row[-1]) for row in store._conn().execute(f"EXPLAIN QUERY PLAN {CLAIM_HEAD}", {"models": None, "limit": 1})
    )
    assert "tasks_queue" in plan and "TEMP B-TREE" not in plan, plan  # in queue order, no sort
    store.close()


def test_history_pages_and_the_change_feed_read_their_indexes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3")
    plans = {
        name: " ".join(str(row[-1]) for row in store._conn().execute(f"EXPLAIN QUERY PLAN {statement}", params))
        for name, (statement, params) in {
            "page": (LIST_BEFORE, {"owner": "k", "before": tid(1), "limit": 50}),
            "changes": (CHANGED, {"owner": "k", "since": NOW, "after": "", "limit": 500}),
        }.items()
    }
    assert "tasks_owner_seq (owner=? AND seq<?)" in plans["page"], plans  # starts at the page, in order
    assert "tasks_owner_changed (owner=? AND updated_at>?)" in plans["changes"], plans
    store.close()
