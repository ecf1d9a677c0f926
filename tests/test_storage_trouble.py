"""Storage trouble on real filesystems: a full disk, a read-only data dir, a database that refuses writes.

Submits get a 503 that names the problem and the place in every dialect, nothing half-written stays,
a task whose images cannot be saved fails saying why and is refunded, /readyz tells the truth, and
everything passes by itself once there is room again. `tests/mounts.py` makes the filesystems.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from journeyd.clock import ManualClock
from journeyd.domain.errors import StorageUnavailable
from journeyd.domain.keys import ApiKey
from journeyd.domain.lifecycle import Status
from journeyd.runtime import build_runtime
from journeyd.store.sqlite import SqliteStore
from tests.conftest import LOOPBACK, Flow, make_settings, png_data_url
from tests.mounts import Mounts
from tests.servers import Server, free_port

IMAGINE = "/v1/midjourney/generations"
PRICE = 5
CREDITS = 100
DB_FULL = "the disk or the database is full; free some space and it recovers by itself"
NO_SPACE = "no space left on device; free some space and it recovers by itself"
IMAGE_PROMPT = png_data_url(np.full((32, 32, 3), 200, np.uint8))
LEDGER = """
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
balance = db.execute("SELECT balance FROM api_keys").fetchone()[0]
rows = db.execute("SELECT kind, task_id FROM ledger WHERE kind != 'grant' ORDER BY id").fetchall()
print(json.dumps([balance, rows]))
"""


@pytest.fixture
def mounts() -> Iterator[Mounts]:
    mounts = Mounts.start()
    try:
        yield mounts
    finally:
        mounts.close()


def run_journeyd(mounts: Mounts, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The `journeyd` command, where the mounts are."""
    return subprocess.run(
        [*mounts.prefix, sys.executable, "-m", "journeyd", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@dataclass
class Volumes:
    """A data dir on a small filesystem of its own, and its images folder on another: either can fill."""

    mounts: Mounts
    data: Path
    images: Path
    secret: str

    @property
    def database(self) -> Path:
        return self.data / "journeyd.sqlite3"

    def server(self, **env: str) -> Server:
        settings = {
            "JOURNEYD_PRICES": json.dumps({"midjourney@imagine": PRICE}),
            "JOURNEYD_CLASSIC_SIZE": "128",
            "JOURNEYD_MIN_FREE_MB": "1",
            **env,
        }
        return Server(self.data, env=settings, prefix=self.mounts.prefix)

    def image_files(self) -> list[Path]:
        images = self.mounts.path(self.images)
        return sorted(p.relative_to(images) for p in images.rglob("*") if p.is_file() and p.name != ".filler")

    def ledger(self) -> tuple[int, list[tuple[str, str]]]:
        """The key's balance and the ledger's charges and refunds, read where the mounts are."""
        done = subprocess.run(
            [*self.mounts.prefix, sys.executable, "-c", LEDGER, str(self.database)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        balance, rows = json.loads(done.stdout)
        return balance, [tuple(row) for row in rows]


@pytest.fixture
def volumes(tmp_path: Path, mounts: Mounts) -> Volumes:
    data = mounts.tmpfs(tmp_path / "data", 16)
    images = mounts.tmpfs(data / "images", 16)
    created = run_journeyd(mounts, "keys", "create", "--credits", str(CREDITS), env={"JOURNEYD_DATA_DIR": str(data)})
    assert created.returncode == 0, created.stderr
    return Volumes(mounts, data, images, created.stdout.strip())


def client(server: Server, volumes: Volumes) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {volumes.secret}"}, timeout=30)


def submit(http: httpx.Client, **body: object) -> str:
    answer = http.post(IMAGINE, json={"prompt": "a lighthouse on a rocky coast", **body})
    assert answer.status_code == 200, answer.text
    return answer.json()["data"][0]["task_id"]


def test_a_full_database_disk_is_a_503_naming_it_in_every_dialect_and_passes_by_itself(volumes: Volumes) -> None:
    server = volumes.server().start()
    try:
        with client(server, volumes) as http:
            done = submit(http)
            server.wait_for(http, done, {"SUCCESS"})
            upscale = http.post(f"{IMAGINE}/upscale", json={"task_id": done, "index": 1}).json()["data"][0]["task_id"]
            server.wait_for(http, upscale, {"SUCCESS"})
            modal = http.post(f"{IMAGINE}/inpaint", json={"task_id": upscale}).json()["data"][0]["task_id"]
            assert http.get("/readyz").json()["ready"] is True
            images_before = volumes.image_files()
            filler = volumes.mounts.fill(volumes.data)

            message = f"journeyd cannot write to {volumes.database}: {DB_FULL}"
            refused = http.post(IMAGINE, json={"prompt": "a lighthouse"})
            assert refused.status_code == 503
            assert refused.json() == {"code": 503, "error": {"message": message, "type": "storage_unavailable"}}
            with_image = http.post(IMAGINE, json={"prompt": "a lighthouse", "image_urls": [IMAGE_PROMPT]})
            assert with_image.status_code == 503 and with_image.json()["error"]["message"] == message
            mask = png_data_url(np.full((256, 256), 255, np.uint8))
            masked = http.post(f"{IMAGINE}/modal", json={"task_id": modal, "prompt": "a sun", "mask_url": mask})
            assert masked.status_code == 503 and masked.json()["error"]["message"] == message
            assert volumes.image_files() == images_before  # the image prompt and the mask it stored are gone again
            mj = http.post("/mj/submit/imagine", json={"prompt": "a lighthouse"})
            assert (mj.status_code, mj.json()["code"], mj.json()["description"]) == (503, 9, message)
            mmj = http.post("/api/v1/midjourney/imagine", json={"prompt": "a lighthouse"})
            assert (mmj.status_code, mmj.json()) == (503, {"success": False, "error": message})

            ready = http.get("/readyz")
            assert ready.status_code == 503
            report = ready.json()
            assert (report["ready"], report["reason"]) == (False, message)
            assert report["checks"]["database"] == {"ok": False, "reason": message}
            assert report["checks"]["images"]["ok"] is True and report["checks"]["engine"]["ok"] is True
            assert http.get("/healthz").status_code == 200  # liveness: the process is fine

            filler.unlink()  # room again: no restart
            assert http.get("/readyz").status_code == 200
            again = submit(http)
            assert server.wait_for(http, again, {"SUCCESS", "FAILURE"})["status"] == "SUCCESS"
    finally:
        server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log
    assert f"POST {IMAGINE}: {message}" in log
    balance, ledger = volumes.ledger()
    assert [kind for kind, _ in ledger] == ["charge", "charge"]  # imagine is priced, upscale and inpaint are free
    assert {task for _, task in ledger} == {done.removeprefix("task_"), again.removeprefix("task_")}
    assert balance == CREDITS - 2 * PRICE  # the refused submits charged nothing


def test_a_full_image_disk_fails_the_task_saying_so_refunds_it_and_passes_by_itself(volumes: Volumes) -> None:
    server = volumes.server().start()
    try:
        with client(server, volumes) as http:
            assert http.get("/readyz").status_code == 200
            filler = volumes.mounts.fill(volumes.images, leave=512 * 1024)
            low = http.get("/readyz")
            assert low.status_code == 503
            assert low.json()["checks"]["images"] == {
                "ok": False,
                "reason": f"journeyd cannot write to {volumes.images}: only 0.5 MiB free, below the 1 MiB journeyd "
                "keeps; free some space and it recovers by itself",
            }
            assert low.json()["checks"]["database"] == {"ok": True}

            volumes.mounts.fill(volumes.images)  # now not a byte more
            failed = server.wait_for(http, submit(http), {"SUCCESS", "FAILURE"})
            assert failed["status"] == "FAILURE"
            assert failed["fail_reason"] == f"journeyd cannot write to {volumes.images}: {NO_SPACE}"
            images_before = volumes.image_files()
            with_image = http.post(IMAGINE, json={"prompt": "a lighthouse", "image_urls": [IMAGE_PROMPT]})
            assert with_image.status_code == 503
            assert with_image.json()["error"]["message"] == f"journeyd cannot write to {volumes.images}: {NO_SPACE}"
            mj = http.post("/mj/submit/imagine", json={"prompt": "a lighthouse", "base64Array": [IMAGE_PROMPT]})
            assert (mj.status_code, mj.json()["code"]) == (503, 9)
            assert volumes.image_files() == images_before  # nothing half-written

            filler.unlink()
            assert http.get("/readyz").status_code == 200
            again = server.wait_for(http, submit(http), {"SUCCESS", "FAILURE"})
            assert again["status"] == "SUCCESS"
            assert http.get(again["image_urls"][0]).headers["content-type"] == "image/png"
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()
    balance, ledger = volumes.ledger()
    failed_id, again_id = failed["id"].removeprefix("task_"), again["id"].removeprefix("task_")
    assert ledger == [("charge", failed_id), ("refund", failed_id), ("charge", again_id)]
    assert balance == CREDITS - PRICE


def test_starting_on_a_read_only_data_dir_says_so_in_one_line(tmp_path: Path, mounts: Mounts) -> None:
    volume = mounts.tmpfs(tmp_path / "volume", 4)
    data = volume / "data"
    assert run_journeyd(mounts, "keys", "create", "--data-dir", str(data)).returncode == 0
    mounts.read_only(volume)
    for place, command in [
        (data, ("serve", "--data-dir", str(data), "--port", str(free_port()))),
        (data, ("keys", "create", "--data-dir", str(data))),
        (volume / "new", ("serve", "--data-dir", str(volume / "new"), "--port", str(free_port()))),
    ]:
        done = run_journeyd(mounts, *command)
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines() == [f"journeyd: cannot write to {place}: read-only file system"]
        assert done.stdout == ""


def test_a_worker_whose_finish_the_database_refuses_leaves_the_task_to_the_lease_reclaim(
    tmp_path: Path, mounts: Mounts, caplog: pytest.LogCaptureFixture
) -> None:
    from starlette.testclient import TestClient

    from journeyd.api.app import create_app

    mounts.need_this_process()
    data = mounts.tmpfs(tmp_path / "data", 16)
    mounts.tmpfs(data / "images", 16)
    clock = ManualClock()
    runtime = build_runtime(make_settings(tmp_path, data_dir=mounts.path(data)), clock=clock, seed=7)
    try:
        with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as http:
            flow = Flow(http, runtime)
            task_id = flow.submit(IMAGINE, {"prompt": "a lighthouse"})
            worker = runtime.inline_worker()
            claimed = runtime.store.claim_batch(worker.id, clock.now_ms(), worker.lease_ms, limit=1, key=lambda t: None)
            filler = mounts.fill(data)
            with caplog.at_level(logging.ERROR, logger="journeyd"):
                [ended] = worker.run(claimed)  # returns: the worker's thread goes on
            assert ended.status is Status.IN_PROGRESS
            lines = [record for record in caplog.records if "could not record its end" in record.getMessage()]
            assert len(lines) == 1 and DB_FULL in lines[0].getMessage()
            assert all(record.exc_info is None for record in caplog.records)

            filler.unlink()
            clock.advance(worker.lease_ms / 1000 + 1)
            assert runtime.service.reclaim().requeued == [task_id.removeprefix("task_")]
            runtime.run_pending()
            task = flow.fetch(task_id)
            assert task["status"] == "SUCCESS" and len(task["image_urls"]) == 4
    finally:
        runtime.store.close()


def test_a_full_database_refuses_a_transaction_whole_and_takes_the_next_once_it_has_room(tmp_path: Path) -> None:
    """SQLITE_FULL for real without a mount, from the database's own page limit: runs everywhere."""
    store = SqliteStore(tmp_path / "journeyd.sqlite3")
    conn = store._conn()  # the limit is per connection: this thread's
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0] + 2}")

    def key(i: int) -> ApiKey:  # a key and its grant in the ledger: two rows in one transaction
        return ApiKey(f"key{i}", f"jd_{i}", "x" * 3000, 50, 0, False)

    made = 0
    with pytest.raises(StorageUnavailable) as refused:
        for made in range(100):
            store.create_key(key(made), f"hash{made}")
    assert (refused.value.status, refused.value.kind) == (503, "storage_unavailable")
    assert refused.value.message == f"journeyd cannot write to {store.path}: {DB_FULL}"
    assert [k.id for k in store.list_keys()] == [f"key{i}" for i in range(made)]
    assert store.ledger(key_id=f"key{made}") == []  # the refused transaction left nothing
    assert not conn.in_transaction

    conn.execute("PRAGMA max_page_count = 1000000")  # room again, on the same connection
    store.create_key(key(made), f"hash{made}")
    assert store.get_key(f"key{made}").balance == 50  # type: ignore[union-attr]
    with pytest.raises(sqlite3.IntegrityError):  # a real mistake is still itself
        store.create_key(key(made), f"hash{made}")
    store.close()
