"""Observability of real `journeyd serve` processes: JSON log lines, and metrics summed over processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import Server, journeyd


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_json_logs_parse_and_carry_request_task_and_key_prefix_but_never_the_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret = journeyd("keys", "create", "--data-dir", str(data)).stdout.strip()
    server = Server(data, args=("--log-format", "json"), env={"JOURNEYD_CLASSIC_SIZE": "128"}).start()
    try:
        headers = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            answer = client.post("/mj/submit/imagine", json={"prompt": "a marsh"}, headers={"X-Request-Id": "it-1"})
            assert answer.status_code == 200 and answer.headers["x-request-id"] == "it-1"
            task = server.wait_for(client, answer.json()["result"], {"SUCCESS"})
            metrics = httpx.get(f"{server.url}/metrics").text  # loopback: no key needed
    finally:
        server.stop()
    text = server.log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is one JSON object
    assert secret not in text and secret not in metrics

    requests = [line for line in lines if line["logger"] == "journeyd.http"]
    [submit] = [line for line in requests if line["request_id"] == "it-1"]
    assert submit["route"] == submit["path"] == "/mj/submit/imagine" and submit["status"] == 200
    assert submit["method"] == "POST" and submit["key"] == secret[:8] and submit["duration_ms"] > 0
    assert {line["route"] for line in requests} >= {"/mj/submit/imagine", "/v1/midjourney/{task_id}", "/metrics"}

    moves: list[dict[str, Any]] = [line for line in lines if line["logger"] == "journeyd.tasks"]
    assert [(m["from"], m["to"]) for m in moves] == [
        (None, "submitted"),
        ("submitted", "in_progress"),
        ("in_progress", "success"),
    ]
    assert {m["task"] for m in moves} == {task["id"].removeprefix("task_")}
    assert moves[0]["request_id"] == "it-1" and all(m["key"] == secret[:8] for m in moves)
    assert moves[1]["worker"].startswith("worker0-") and moves[2]["duration_ms"] >= 0
    assert all(isinstance(m["ts"], str) and m["level"] == "info" for m in moves)


_CHILD = """
import os, sys
from journeyd import metrics
for _ in range(int(sys.argv[1])):
    metrics.task_submitted("IMAGINE", "turbo")
metrics.HTTP_IN_FLIGHT.inc()  # a request it never finished answering:
os._exit(0)  # the process dies without cleaning up
"""


def test_metrics_of_several_processes_are_summed_in_one_scrape(tmp_path: Path) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared), "JOURNEYD_CLASSIC_SIZE": "128"}
    for count in (2, 3):
        subprocess.run([sys.executable, "-c", _CHILD, str(count)], env={**Server(tmp_path).env, **env}, check=True)
    server = Server(tmp_path / "data", env=env).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            answer = client.post("/v1/midjourney/generations", json={"prompt": "a comet", "speed": "turbo"})
            server.wait_for(client, answer.json()["data"][0]["task_id"], {"SUCCESS"})
            samples = _samples(client.get("/metrics").text)
    finally:
        server.stop()

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    assert value("journeyd_tasks_submitted_total", action="IMAGINE", speed="turbo") == 2 + 3 + 1
    assert value("journeyd_tasks_finished_total", action="IMAGINE", speed="turbo", status="success") == 1
    assert value("journeyd_queue_depth", speed="turbo", status="submitted") == 0
    assert value("journeyd_http_requests_in_flight") == 1  # the scrape itself; the dead processes' are gone
    assert list(shared.glob("gauge_live*")) == []  # the server took its own live gauges with it on exit
