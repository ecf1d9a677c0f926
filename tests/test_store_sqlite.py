"""The store contract, run against the SQLite adapter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from journeyd.store.sqlite import SqliteStore
from tests.store_contract import StoreContract


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SqliteStore]:
        store = SqliteStore(tmp_path / "journeyd.sqlite3")
        yield store
        store.close()
