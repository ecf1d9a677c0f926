"""A fleet of real processes for tests: API nodes (`journeyd serve --workers 0`) and Celery workers
(`journeyd worker --engine classic`) sharing one PostgreSQL database, one RabbitMQ namespace and one
S3 bucket. Every process gets its settings from the environment, as an operator would give them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from kombu import Connection

from tests.servers import Server, free_port

RABBITMQ = os.environ.get("JOURNEYD_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
WEBHOOK_SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"  # shared by every node, so webhooks verify alike


class WorkerProcess:
    def __init__(self, name: str, root: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.name, self.env, self.args = name, env, args
        self.log = root / f"{name}.log"
        self.data_dir = root / name
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_url: str | None = None

    def start(self, timeout_s: float = 60) -> WorkerProcess:
        """Start it and wait until Celery says it is ready to consume."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "journeyd", "worker", "--engine", "classic", *self.args],
                env={**self.env, "JOURNEYD_DATA_DIR": str(self.data_dir)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.process.returncode}:\n{self.read_log()}")
            if b"ready." in self.log.read_bytes()[offset:]:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.name} did not get ready:\n{self.read_log()}")

    def read_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        """kill -9: the task it holds keeps its lease until the lease runs out."""
        self.signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)

    def stop(self, timeout_s: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.process.terminate()
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


class Fleet:
    """The processes of one test; `stop()` ends them all and deletes the broker namespace."""

    def __init__(self, root: Path, *, database_url: str, s3_env: dict[str, str], storage_url: str, **settings: Any):
        self.root = root
        self.namespace = f"jt{uuid.uuid4().hex[:12]}"
        self.env = {
            **os.environ,
            **s3_env,
            "JOURNEYD_DATABASE_URL": database_url,
            "JOURNEYD_BROKER_URL": RABBITMQ,
            "JOURNEYD_BROKER_NAMESPACE": self.namespace,
            "JOURNEYD_STORAGE_URL": storage_url,
            "JOURNEYD_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "JOURNEYD_CLASSIC_SIZE": "128",
            **{f"JOURNEYD_{name.upper()}": str(value) for name, value in settings.items()},
        }
        self.apis: list[Server] = []
        self.workers: list[WorkerProcess] = []

    def api(self, args: tuple[str, ...] = ()) -> Server:
        server = Server(self.root / f"api{len(self.apis) + 1}", env=self.env, args=("--workers", "0", *args))
        self.apis.append(server)
        server.start()
        return server

    def worker(self, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> WorkerProcess:
        """A worker process, with its own /metrics on a free port (`metrics_url`); `env` overrides the
        fleet's settings for this one (a database URL through a proxy, a slower engine)."""
        port = free_port()
        worker = WorkerProcess(
            f"worker{len(self.workers) + 1}",
            self.root,
            {**self.env, **(env or {})},
            ("--worker-metrics", str(port), *args),
        )
        worker.metrics_url = f"http://127.0.0.1:{port}/metrics"
        self.workers.append(worker)
        return worker.start()

    def client(self, server: Server, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=server.url, timeout=30, headers=headers)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        for server in self.apis:
            server.stop()
        delete_namespace(self.namespace)

    def logs(self) -> str:
        parts = [f"--- {w.name}\n{w.read_log()[-4000:]}" for w in self.workers]
        parts += [f"--- api {s.port}\n{s.log.read_text(errors='replace')[-4000:]}" for s in self.apis if s.log.exists()]
        return "\n".join(parts)


def delete_namespace(namespace: str) -> None:
    """Remove a test's exchange and queues from the broker (they are durable: they would outlive it)."""
    with Connection(RABBITMQ, connect_timeout=5) as conn:
        channel = conn.channel()
        for queue in _queues_of(namespace):
            channel.queue_delete(queue)
        channel.exchange_delete(namespace)


def _queues_of(namespace: str) -> list[str]:
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True, text=True, timeout=30, check=False
    )
    return [name for name in listed.stdout.split() if name.startswith(f"{namespace}.")]
