"""A fresh PostgreSQL database per test, on the server JOURNEYD_TEST_PG names, dropped afterwards.

The server is a real one (scripts/services makes it ready). When it cannot be reached the test
fails, saying so: a store test that skips would let a PostgreSQL-only bug through unseen.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

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


class Cuttable:
    """A TCP proxy in front of the PostgreSQL server that a test can cut and restore, as a server
    restart or a network failure would: `cut()` drops every connection and refuses new ones."""

    def __init__(self) -> None:
        parts = conninfo_to_dict(SERVER)
        self.upstream = (parts.get("host") or "127.0.0.1", int(parts.get("port") or 5432))
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.restore()

    def dsn(self, dsn: str) -> str:
        """`dsn`, reached through this proxy."""
        return make_conninfo(dsn, host="127.0.0.1", port=str(self.port))

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        for sock in [listener, *sockets]:
            if sock is not None:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.upstream, timeout=3)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
