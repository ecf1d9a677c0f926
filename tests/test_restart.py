"""Durability with real processes: `kill -9` in the middle of a task, then a restart."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx

from tests.servers import Server, journeyd

PRICES = json.dumps({"midjourney@imagine": 5})


def test_kill_9_mid_task_then_restart_completes_every_task_exactly_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret = journeyd("keys", "create", "--credits", "100", env={"JOURNEYD_DATA_DIR": str(data)}).stdout.strip()
    env = {"JOURNEYD_PRICES": PRICES, "JOURNEYD_CLASSIC_SIZE": "1024", "JOURNEYD_LEASE_S": "600"}
    server = Server(data, env=env).start()
    headers = {"Authorization": f"Bearer {secret}"}
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            ids = []
            for i in range(6):
                answer = client.post("/v1/midjourney/generations", json={"prompt": f"storm over a harbour {i}"})
                assert answer.status_code == 200, answer.text
                ids.append(answer.json()["data"][0]["task_id"])
            first = server.wait_for(client, ids[0], {"SUCCESS"})
            first_image = client.get(first["image_urls"][0]).content
            running = server.wait_for(client, ids[1], {"IN_PROGRESS"})
            assert running["status"] == "IN_PROGRESS"
        server.kill()

        server = Server(data, env=env, port=server.port).start()  # same address: the same image URLs
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            finals = [server.wait_for(client, task_id, {"SUCCESS", "FAILURE", "CANCEL"}) for task_id in ids]
            assert [t["status"] for t in finals] == ["SUCCESS"] * 6
            assert client.get(first["image_urls"][0]).content == first_image  # images survive the restart
            for task in finals:
                assert len(task["image_urls"]) == 4
                for url in task["image_urls"]:
                    assert client.get(url).headers["content-type"] == "image/png"
    finally:
        server.stop()

    with sqlite3.connect(data / "journeyd.sqlite3") as db:
        charges = db.execute("SELECT task_id, COUNT(*) FROM ledger WHERE kind = 'charge' GROUP BY task_id").fetchall()
        refunds = db.execute("SELECT COUNT(*) FROM ledger WHERE kind = 'refund'").fetchone()[0]
        balance = db.execute("SELECT balance FROM api_keys").fetchone()[0]
        attempts = dict(db.execute("SELECT id, attempts FROM tasks").fetchall())
    assert sorted(task_id for task_id, _ in charges) == sorted(i.removeprefix("task_") for i in ids)
    assert all(count == 1 for _, count in charges) and refunds == 0
    assert balance == 100 - 6 * 5
    assert attempts[ids[1].removeprefix("task_")] == 2  # the interrupted task ran again, once
