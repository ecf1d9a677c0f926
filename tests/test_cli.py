"""The `journeyd` command as a user runs it: keys, the loopback rule, the demo."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from journeyd.domain.keys import hash_secret
from tests.servers import Server, free_port, journeyd


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


def test_demo_runs_the_region_flow_and_prints_urls(tmp_path: Path) -> None:
    port = free_port()
    result = journeyd(
        "demo",
        "--url",
        f"http://127.0.0.1:{port}",
        "--data-dir",
        str(tmp_path / "data"),
        env={"JOURNEYD_CLASSIC_SIZE": "256"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["imagine", "U1", "Vary"]
    assert sum("candidate" in line for line in lines) == 4
    for line in lines:
        url = line.split()[-1]
        task_id, name = url.rsplit("/", 2)[-2:]
        assert (tmp_path / "data" / "images" / task_id / name).is_file()


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
