"""Where a running journeyd listens, recorded in its data dir, so that other commands (`demo`) find it.

`<data dir>/server.json` holds `{"url", "pid", "started_at"}`. The server writes it once its socket
listens and removes it on a clean exit. Like the data dir's lock, it speaks only for a live process:
a record whose process is gone (kill -9, a crash) is stale, and reads as none.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

import uvicorn

from journeyd.clock import Clock, SystemClock
from journeyd.config import Settings

RECORD_NAME = "server.json"
log = logging.getLogger("journeyd")


@dataclass(frozen=True)
class ServerRecord:
    url: str  # as this machine reaches it: http://127.0.0.1:8080
    pid: int
    started_at: int  # milliseconds since the epoch


def read_record(data_dir: Path) -> ServerRecord | None:
    """The live server recorded in `data_dir`, or None (no record, an unreadable one, or a stale one)."""
    try:
        data = json.loads((data_dir / RECORD_NAME).read_text())
        record = ServerRecord(str(data["url"]), int(data["pid"]), int(data["started_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if _alive(record.pid) else None


def write_record(data_dir: Path, record: ServerRecord) -> None:
    """Write the record whole or not at all: a reader never sees half of it."""
    path = data_dir / RECORD_NAME
    temporary = path.with_name(f".{RECORD_NAME}.{record.pid}")
    temporary.write_text(json.dumps(asdict(record)) + "\n")
    os.replace(temporary, path)


def remove_record(data_dir: Path, pid: int) -> None:
    """Remove the record if it is still the one process `pid` wrote."""
    path = data_dir / RECORD_NAME
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


class RecordedServer(uvicorn.Server):
    """A uvicorn server that keeps the data dir's record while it listens: written after the socket
    is bound (so whoever reads it can connect), removed first thing at shutdown. Here rather than
    after `run()` returns: uvicorn ends the process by re-raising SIGTERM once it has shut down."""

    def __init__(self, config: uvicorn.Config, settings: Settings, clock: Clock | None = None) -> None:
        super().__init__(config)
        self.settings, self.clock = settings, clock or SystemClock()
        self.pid = os.getpid()

    @property
    def port(self) -> int:
        """The port the socket is bound to (the configured one, or the one the system picked for 0)."""
        sock: socket.socket = self.servers[0].sockets[0]
        return sock.getsockname()[1]

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        record = ServerRecord(self.settings.local_url(self.port), self.pid, self.clock.now_ms())
        try:
            write_record(self.settings.data_dir, record)
        except OSError as error:  # the server works without it; only `journeyd demo` will not find it
            log.warning("could not record the server's address in %s: %s", self.settings.data_dir, error)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        remove_record(self.settings.data_dir, self.pid)
        await super().shutdown(sockets)
