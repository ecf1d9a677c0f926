"""A fresh PostgreSQL database per test, on the server JOURNEYD_TEST_PG names, dropped afterwards.

The server is a real one (scripts/services makes it ready). When it cannot be reached the test
fails, saying so: a store test that skips would let a PostgreSQL-only bug through unseen.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from journeyd.store.postgres import describe

SERVER = os.environ.get("JOURNEYD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(SERVER, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL at {describe(SERVER)} cannot be reached ({str(error).strip()}): "
            "run scripts/services to start it, or point JOURNEYD_TEST_PG at a server",
            pytrace=False,
        )


@contextmanager
def fresh_database() -> Iterator[str]:
    """The DSN of a new, empty database of our own (other test runs use the same server at once)."""
    name = f"journeyd_test_{secrets.token_hex(6)}"
    with _admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(SERVER, dbname=name)
    finally:
        with _admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run_sql(dsn: str, statement: str) -> list[tuple]:
    """Run one statement on its own connection, committed; its rows, if it returns any."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description else []
