"""The `journeyd` command as a user runs it: keys, the loopback rule, the demo, tasks, --version."""

from __future__ import annotations

import importlib.metadata
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict

from journeyd.domain.keys import hash_secret
from journeyd.runtime import build_runtime
from journeyd.service import Caller
from journeyd.serving import RECORD_NAME, read_record
from tests.conftest import make_settings
from tests.pg import fresh_database
from tests.servers import Server, free_port, journeyd

SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def test_keys_create_prints_a_key_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = journeyd("keys", "create", "--credits", "250", "--name", "ci", "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    assert secret.startswith("jd_") and len(secret) > 40
    with sqlite3.connect(data / "journeyd.sqlite3") as db:
        rows = db.execute("SELECT hash, balance, name FROM api_keys").fetchall()
        dump = "\n".join(db.iterdump())
    assert rows == [(hash_secret(secret), 250, "ci")]
    assert secret not in dump
    listing = journeyd("keys", "list", "--data-dir", str(data)).stdout
    assert "250 credits" in listing and secret not in listing


def test_a_top_up_and_a_revocation_reach_a_running_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret = journeyd("keys", "create", "--credits", "3", "--data-dir", str(data)).stdout.strip()
    key_id = journeyd("keys", "list", "--data-dir", str(data)).stdout.split()[0]
    server = Server(data, args=("--prices", '{"midjourney@imagine": 4}')).start()
    try:

        def imagine() -> httpx.Response:
            return httpx.post(
                f"{server.url}/v1/midjourney/generations",
                json={"prompt": "a lighthouse"},
                headers={"Authorization": f"Bearer {secret}"},
            )

        assert imagine().status_code == 402  # 3 credits, the price is 4
        credited = journeyd("keys", "credit", key_id, "5", "--data-dir", str(data))
        assert credited.returncode == 0 and "8 credits  active" in credited.stdout
        assert imagine().status_code == 200
        assert "4 credits  active" in journeyd("keys", "list", "--data-dir", str(data)).stdout
        assert journeyd("keys", "credit", key_id, "0", "--data-dir", str(data)).returncode == 2
        assert journeyd("keys", "credit", "nope", "5", "--data-dir", str(data)).returncode == 2
        revoked = journeyd("keys", "revoke", key_id, "--data-dir", str(data))
        assert revoked.returncode == 0 and "revoked" in revoked.stdout
        refused = imagine()
        assert refused.status_code == 403 and "revoked" in refused.text
    finally:
        server.stop()
    with sqlite3.connect(data / "journeyd.sqlite3") as db:
        grants = db.execute("SELECT amount FROM ledger WHERE kind = 'grant' ORDER BY id").fetchall()
    assert grants == [(3,), (5,)]


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    result = journeyd("serve", "--host", "0.0.0.0", "--port", str(free_port()), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0" in result.stderr and "keys create" in result.stderr


@pytest.mark.parametrize("insecure", [True, False])
def test_serve_beyond_loopback_with_insecure_or_a_key(tmp_path: Path, insecure: bool) -> None:
    data = tmp_path / "data"
    args: tuple[str, ...] = ("--host", "0.0.0.0")
    secret = None
    if insecure:
        args += ("--insecure",)
    else:
        secret = journeyd("keys", "create", "--data-dir", str(data)).stdout.strip()
    server = Server(data, args=args).start()
    try:
        answer = httpx.post(
            f"{server.url}/v1/midjourney/generations",
            json={"prompt": "x"},
            headers={"Authorization": f"Bearer {secret}"} if secret else {},
        )
        assert answer.status_code == 200, answer.text
        if secret:
            assert httpx.post(f"{server.url}/v1/midjourney/generations", json={"prompt": "x"}).status_code == 401
    finally:
        server.stop()


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data).start()
    try:
        other = journeyd("serve", "--port", str(free_port()), "--data-dir", str(data))
        assert other.returncode != 0 and "already using" in other.stdout + other.stderr
    finally:
        server.stop()


def _demo_lines(stdout: str, data: Path, url: str) -> list[str]:
    """The demo's result lines, checked: a line per step with its time, then the candidates, each URL's
    image in `data` and served at `url`."""
    lines = stdout.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["imagine", "U1", "Vary"]
    for line in lines[:3]:
        assert re.search(r" \d+\.\d s  http", line), line  # the time the step took
    assert sum("candidate" in line for line in lines) == 4
    for line in lines:
        image = line.split()[-1]
        assert image.startswith(f"{url}/images/")
        task_id, name = image.rsplit("/", 2)[-2:]
        assert (data / "images" / task_id / name).is_file()
    return lines


def _progress(stderr: str, step: str) -> list[str]:
    return [line.removeprefix(step).strip() for line in stderr.splitlines() if line.startswith(step + " ")]


def test_demo_starts_its_own_server_and_shows_each_steps_progress(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    env = {"JOURNEYD_CLASSIC_SIZE": "256", "JOURNEYD_CLASSIC_STEP_S": "0.05"}
    result = journeyd("demo", "--port", str(port), "--data-dir", str(data), env=env)
    assert result.returncode == 0, result.stderr
    assert f"no journeyd at http://127.0.0.1:{port}; starting one" in result.stderr
    _demo_lines(result.stdout, data, f"http://127.0.0.1:{port}")
    imagine = _progress(result.stderr, "imagine")
    assert imagine[-1] == "SUCCESS 100%"
    assert any(re.fullmatch(r"IN_PROGRESS ([1-9]|[1-9]\d)%", line) for line in imagine), imagine
    assert _progress(result.stderr, "Vary Region")[-1] == "SUCCESS 100%"
    assert not (data / RECORD_NAME).exists()  # its server stopped cleanly


def test_demo_finds_the_server_running_on_its_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data, env={"JOURNEYD_CLASSIC_SIZE": "256"}).start()
    try:
        result = journeyd("demo", "--data-dir", str(data))
        assert result.returncode == 0, result.stderr
        assert "starting one" not in result.stderr
        _demo_lines(result.stdout, data, server.url)
    finally:
        server.stop()


def test_demo_never_starts_a_second_server_on_a_busy_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data).start()
    try:
        elsewhere = f"http://127.0.0.1:{free_port()}"
        result = journeyd("demo", "--url", elsewhere, "--data-dir", str(data))
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert f"journeyd at {server.url} already uses" in result.stderr and f"--url {server.url}" in result.stderr
        # with no record to go by (an older server, say), the data dir's lock still stops it
        (data / RECORD_NAME).unlink()
        result = journeyd("demo", "--url", elsewhere, "--data-dir", str(data))
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "already using" in result.stderr
    finally:
        server.stop()


def test_serve_records_where_it_listens_until_it_stops(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data).start()
    assert server.process is not None
    record = json.loads((data / RECORD_NAME).read_text())
    assert record["url"] == server.url and record["pid"] == server.process.pid and record["started_at"] > 0
    server.stop()
    assert not (data / RECORD_NAME).exists()

    server = Server(data).start()
    server.kill()  # no shutdown code runs: the record stays, but speaks for a process that is gone
    assert (data / RECORD_NAME).exists() and read_record(data) is None
    result = journeyd("demo", "--port", str(free_port()), "--data-dir", str(data), env={"JOURNEYD_CLASSIC_SIZE": "64"})
    assert result.returncode == 0, result.stderr  # the stale record did not stop it


def test_version_is_the_packages() -> None:
    result = journeyd("--version")
    assert result.returncode == 0 and result.stdout == f"journeyd {importlib.metadata.version('journeyd')}\n"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'elsewhere' / 'tasks.sqlite3'}"
    else:
        with fresh_database() as dsn:
            parts = conninfo_to_dict(dsn)  # as the URL an operator writes
            user, host, port = parts.get("user", "postgres"), parts["host"], parts.get("port", 5432)
            yield f"postgresql://{user}@{host}:{port}/{parts['dbname']}"


def test_tasks_list_and_show_read_the_database_directly(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url=database_url, webhook_secret=SECRET)
    runtime = build_runtime(settings, seed=5)
    local = Caller(None)
    done = runtime.service.imagine(local, "a red fox in the snow --ar 3:2")
    runtime.run_pending()
    waiting = runtime.service.imagine(local, "a blue heron")
    cancelled = runtime.service.cancel(local, runtime.service.imagine(local, "a grey wolf").id)
    runtime.store.close()
    where = ("--data-dir", str(settings.data_dir), "--database-url", database_url)

    listing = journeyd("tasks", "list", *where)
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "ACTION", "PROGRESS", "CREATED", "TOOK", "PROMPT"]
    assert [row.split()[:4] for row in rows] == [
        [cancelled.id, "CANCEL", "IMAGINE", "0%"],
        [waiting.id, "SUBMITTED", "IMAGINE", "0%"],
        [done.id, "SUCCESS", "IMAGINE", "100%"],
    ]
    assert rows[2].endswith("a red fox in the snow --ar 3:2")
    limited = journeyd("tasks", "list", "--limit", "1", "--status", "success", "--status", "SUBMITTED", *where)
    assert [row.split()[0] for row in limited.stdout.splitlines()[1:]] == [waiting.id]
    assert journeyd("tasks", "list", "--status", "MODAL", *where).stdout == "no tasks with that status\n"
    bad = journeyd("tasks", "list", "--status", "finished", *where)
    assert bad.returncode == 2 and "SUCCESS" in bad.stderr

    shown = journeyd("tasks", "show", done.job, *where)  # any of its ids: here the messageId
    assert shown.returncode == 0, shown.stderr
    fields = dict(line.split(None, 1) if line[:1] != " " else ("", line) for line in shown.stdout.splitlines())
    assert fields["status"].strip() == "SUCCESS  100%"
    assert fields["prompt"].strip() == "a red fox in the snow --ar 3:2"
    assert re.fullmatch(r"\s*\d+\.\d s", fields["took"])
    for i in range(4):
        key = f"{done.id}/{i}.png"
        assert re.search(
            rf"image {i + 1}\s+{re.escape(key)}  http://127.0.0.1:8080/images/{re.escape(key)}", shown.stdout
        )
    failed = journeyd("tasks", "show", f"task_{cancelled.id}", *where).stdout
    assert re.search(r"fail reason\s+cancelled by request", failed) and "CANCEL" in failed

    unknown = journeyd("tasks", "show", "task_01M8SHNVEPAB8YFBBFXD9GEEQP", *where)
    assert unknown.returncode == 2 and unknown.stdout == "" and unknown.stderr.count("\n") == 1
    assert "no task 'task_01M8SHNVEPAB8YFBBFXD9GEEQP'" in unknown.stderr


def test_tasks_show_gives_the_running_servers_image_urls(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data, env={"JOURNEYD_CLASSIC_SIZE": "64"}).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            task_id = client.post("/v1/midjourney/generations", json={"prompt": "a lighthouse"}).json()["data"][0]
            server.wait_for(client, task_id["task_id"], {"SUCCESS"})
        shown = journeyd("tasks", "show", task_id["task_id"], "--data-dir", str(data)).stdout
        assert f"{server.url}/images/{task_id['task_id'].removeprefix('task_')}/grid.png" in shown
    finally:
        server.stop()


def test_serve_with_a_broken_model_stops_at_start_up_naming_it(tmp_path: Path) -> None:
    result = journeyd(
        "serve",
        "--engine",
        "diffusers",
        "--model",
        str(tmp_path / "missing-model"),
        "--model-family",
        "sdxl",
        "--port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / "d"),
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    assert "missing-model" in result.stderr and "model_index.json" in result.stderr
