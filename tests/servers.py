"""`journeyd serve` as a real subprocess on a free port, for restart and CLI tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def journeyd(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "journeyd", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


class Server:
    def __init__(
        self,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        port: int | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.data_dir, self.port = data_dir, port or free_port()
        self.prefix = list(prefix)  # e.g. nsenter, to run in the namespace of a test's mounts
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "JOURNEYD_DATA_DIR": str(data_dir), **(env or {})}
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout_s: float = 60) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "journeyd", "serve", "--port", str(self.port), *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"journeyd exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"journeyd did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait_for(self, client: httpx.Client, task_id: str, statuses: set[str], timeout_s: float = 120) -> dict:
        """Poll like a client does until the task reaches one of `statuses`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            task = client.get(f"/v1/midjourney/{task_id}").json()
            if task["status"] in statuses:
                return task
            time.sleep(0.05)
        raise AssertionError(f"task {task_id} never reached {statuses}: {task}")
