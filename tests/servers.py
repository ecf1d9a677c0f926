"""`journeyd serve` as a real subprocess on a free port, for restart and CLI tests; and an app under
uvicorn in a thread of the test's process, for tests that need a real connection (streams)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve the ASGI `app` with uvicorn on a free loopback port, in a thread; its base URL. Close
    every stream before leaving: uvicorn waits for open requests (a few seconds) as it shuts down."""
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


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
