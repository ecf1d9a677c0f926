"""/metrics and the per-request and per-task log lines, in-process over real HTTP (ASGI).

Metrics are process-wide, so each test compares two scrapes, as a dashboard's rate() would.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from journeyd.clock import ManualClock
from journeyd.domain.keys import ApiKey, hash_secret
from journeyd.domain.lifecycle import Status
from journeyd.engines.classic.render import STAGES
from journeyd.logs import JsonFormatter, TextFormatter
from journeyd.runtime import Runtime, build_runtime
from journeyd.service import Caller
from tests.conftest import LOOPBACK, Flow, TestClient, create_app, make_settings
from tests.test_webhooks import Receiver, receiver  # noqa: F401 (a fixture)

LOCAL = Caller(None)
SECRET = "jd_observability-test-secret-0123456789abcdefghij"
REMOTE = ("203.0.113.7", 40000)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, **headers: str) -> Samples:
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


class Scrapes:
    """A scrape now, and what moved since then."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.before = scrape(client)

    def delta(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return scrape(self.client).get(key, 0.0) - self.before.get(key, 0.0)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def add_key(runtime: Runtime, secret: str = SECRET, credits: int = 100) -> ApiKey:
    key = ApiKey("key-1", secret[:8], "test", credits, runtime.clock.now_ms())
    runtime.store.create_key(key, hash_secret(secret))
    return key


# --- metrics --------------------------------------------------------------------------------------
def test_task_counters_and_queue_depth_follow_a_users_tasks(
    client: TestClient, flow: Flow, runtime: Runtime, clock: ManualClock
) -> None:
    scrapes = Scrapes(client)
    fast = flow.submit("/v1/midjourney/generations", {"prompt": "a lighthouse", "speed": "fast"})
    queued = scrape(client)
    assert value(queued, "journeyd_queue_depth", speed="fast", status="submitted") == 1
    assert value(queued, "journeyd_queue_depth", speed="relax", status="submitted") == 0
    worker = runtime.inline_worker()
    claimed = runtime.store.claim_next(worker.id, clock.now_ms(), worker.lease_ms)
    running = scrape(client)
    assert value(running, "journeyd_queue_depth", speed="fast", status="submitted") == 0
    assert value(running, "journeyd_queue_depth", speed="fast", status="in_progress") == 1
    assert claimed is not None and worker.run([claimed])[0].status is Status.SUCCESS
    assert value(scrape(client), "journeyd_queue_depth", speed="fast", status="in_progress") == 0

    relax = flow.submit("/v1/midjourney/generations", {"prompt": "a fox"})
    number = runtime.service.get(LOCAL, relax).number
    assert client.post(f"/mj/task/{number}/cancel").status_code == 200
    upscaled = flow.upscale(fast)
    flow.submit("/v1/midjourney/generations/inpaint", {"task_id": upscaled["id"]})
    clock.advance(runtime.settings.modal_timeout_s + 1)
    runtime.maintenance.run_once()  # the modal window closes

    assert scrapes.delta("journeyd_tasks_submitted_total", action="IMAGINE", speed="fast") == 1
    assert scrapes.delta("journeyd_tasks_submitted_total", action="IMAGINE", speed="relax") == 1
    assert scrapes.delta("journeyd_tasks_submitted_total", action="UPSCALE", speed="fast") == 1
    assert scrapes.delta("journeyd_tasks_submitted_total", action="INPAINT", speed="fast") == 1
    assert scrapes.delta("journeyd_tasks_finished_total", action="IMAGINE", speed="fast", status="success") == 1
    assert scrapes.delta("journeyd_tasks_finished_total", action="UPSCALE", speed="fast", status="success") == 1
    assert scrapes.delta("journeyd_tasks_finished_total", action="IMAGINE", speed="relax", status="cancelled") == 1
    assert scrapes.delta("journeyd_tasks_finished_total", action="INPAINT", speed="fast", status="cancelled") == 1
    assert scrapes.delta("journeyd_tasks_finished_total", action="IMAGINE", speed="fast", status="failure") == 0


def test_queue_wait_and_run_time_are_measured_on_the_task_clock(
    client: TestClient, flow: Flow, runtime: Runtime, clock: ManualClock
) -> None:
    scrapes = Scrapes(client)
    flow.submit("/v1/midjourney/generations", {"prompt": "a slow one"})
    clock.advance(42)
    worker = runtime.inline_worker()
    claimed = runtime.store.claim_next(worker.id, clock.now_ms(), worker.lease_ms)
    clock.advance(95)
    assert claimed is not None and worker.run([claimed])[0].status is Status.SUCCESS
    assert scrapes.delta("journeyd_task_queue_wait_seconds_count", action="IMAGINE") == 1
    assert scrapes.delta("journeyd_task_queue_wait_seconds_sum", action="IMAGINE") == pytest.approx(42)
    assert scrapes.delta("journeyd_task_queue_wait_seconds_bucket", action="IMAGINE", le="30.0") == 0
    assert scrapes.delta("journeyd_task_queue_wait_seconds_bucket", action="IMAGINE", le="60.0") == 1
    assert scrapes.delta("journeyd_task_run_seconds_count", action="IMAGINE") == 1
    assert scrapes.delta("journeyd_task_run_seconds_sum", action="IMAGINE") == pytest.approx(95)


def test_engine_steps_count_the_steps_the_engine_reported(client: TestClient, flow: Flow) -> None:
    scrapes = Scrapes(client)
    flow.imagine("a field of poppies")
    flow.imagine("a field of tulips")
    assert scrapes.delta("journeyd_engine_steps_total", engine="classic") == 2 * 4 * STAGES  # four images each


def test_reclaimed_leases_count_requeued_then_failed(client: TestClient, runtime: Runtime, clock: ManualClock) -> None:
    scrapes = Scrapes(client)
    runtime.service.imagine(LOCAL, "fragile")
    for attempt in range(runtime.settings.max_attempts):
        assert runtime.store.claim_next(f"dead{attempt}", clock.now_ms(), 60_000) is not None
        clock.advance(61)
        runtime.maintenance.run_once()
    assert scrapes.delta("journeyd_leases_reclaimed_total", outcome="requeued") == runtime.settings.max_attempts - 1
    assert scrapes.delta("journeyd_leases_reclaimed_total", outcome="failed") == 1
    assert scrapes.delta("journeyd_tasks_finished_total", action="IMAGINE", speed="relax", status="failure") == 1
    assert scrapes.delta("journeyd_task_queue_wait_seconds_count", action="IMAGINE") == runtime.settings.max_attempts


@pytest.fixture
def hooked(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[TestClient, Runtime]]:
    runtime = build_runtime(make_settings(tmp_path, allow_private_webhooks=True), clock=clock, seed=5)
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        yield client, runtime
    runtime.store.close()


def test_webhook_deliveries_are_counted_by_outcome(
    hooked: tuple[TestClient, Runtime],
    receiver: Receiver,  # noqa: F811
    clock: ManualClock,
) -> None:
    client, runtime = hooked
    scrapes = Scrapes(client)
    receiver.answers = [500]  # the first update fails once...
    client.post("/mj/submit/imagine", json={"prompt": "a kite", "notifyHook": receiver.url})
    runtime.notifier.run_once()
    runtime.run_pending()  # ...and is superseded by the newer ones, which are delivered
    clock.advance(10)
    runtime.notifier.run_once()
    receiver.answers = [410]  # the receiver is gone: that update fails for good
    client.post("/mj/submit/imagine", json={"prompt": "a balloon", "notifyHook": receiver.url})
    runtime.notifier.run_once()
    delivered = sum(1 for d in receiver.received if d["status"] == 200)
    assert delivered >= 2  # IN_PROGRESS ... SUCCESS
    assert scrapes.delta("journeyd_webhook_deliveries_total", outcome="retry") == 1
    assert scrapes.delta("journeyd_webhook_deliveries_total", outcome="superseded") == 1
    assert scrapes.delta("journeyd_webhook_deliveries_total", outcome="delivered") == delivered
    assert scrapes.delta("journeyd_webhook_deliveries_total", outcome="failed") == 1


def test_http_requests_are_labelled_by_route_template_not_by_path(client: TestClient, flow: Flow) -> None:
    scrapes = Scrapes(client)
    task = flow.imagine("a moth")
    number = flow.runtime.service.get(LOCAL, task["id"]).number
    assert client.get(f"/mj/task/{number}/fetch").status_code == 200
    assert client.get("/mj/task/1234567890123456/fetch").status_code == 404
    for i in range(5):
        assert client.get(f"/no/such/{i}").status_code == 404
    too_big = b"x" * (flow.runtime.settings.max_request_bytes + 1)
    for path in ("/mj/submit/imagine", "/v1/midjourney/generations"):  # refused before routing
        assert client.post(path, content=too_big).status_code == 413
    assert client.request("BREW", f"/mj/task/{number}/cancel").status_code == 405
    route = "/mj/task/{id}/fetch"
    assert scrapes.delta("journeyd_http_requests_total", route=route, method="GET", status="200") == 1
    assert scrapes.delta("journeyd_http_requests_total", route=route, method="GET", status="404") == 1
    assert scrapes.delta("journeyd_http_requests_total", route="unmatched", method="GET", status="404") == 5
    for path in ("/mj/submit/imagine", "/v1/midjourney/generations"):  # not /v1/midjourney/{task_id}, a GET
        assert scrapes.delta("journeyd_http_requests_total", route=path, method="POST", status="413") == 1
    assert (
        scrapes.delta("journeyd_http_requests_total", route="/mj/task/{id}/cancel", method="other", status="405") == 1
    )
    assert scrapes.delta("journeyd_http_request_duration_seconds_count", route=route, method="GET") == 2
    routes = {v for _, labels in scrape(client) for label, v in labels if label == "route"}
    assert not any(route.startswith("/no/") for route in routes)


def test_metrics_are_free_on_loopback_and_need_a_key_from_elsewhere(runtime: Runtime) -> None:
    app = create_app(runtime, manage_runtime=False)
    with TestClient(app, client=REMOTE) as remote, TestClient(app, client=LOOPBACK) as local:
        add_key(runtime)
        assert remote.get("/metrics").status_code == 401
        assert remote.get("/metrics", headers={"Authorization": "Bearer jd_wrong"}).status_code == 401
        scrape(remote, Authorization=f"Bearer {SECRET}")
        scrape(local)
    runtime.settings.metrics_public = True
    with TestClient(create_app(runtime, manage_runtime=False), client=REMOTE) as remote:
        scrape(remote)


# --- logs -------------------------------------------------------------------------------------------
def _lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == logger]


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return record.fields  # type: ignore[attr-defined, no-any-return]


def test_each_request_logs_one_line_with_its_id_route_and_key_prefix(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    add_key(runtime)
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        auth = {"Authorization": f"Bearer {SECRET}"}
        answer = client.post(
            "/mj/submit/imagine", json={"prompt": "a heron"}, headers={**auth, "X-Request-Id": "req-42.a"}
        )
        assert answer.headers["x-request-id"] == "req-42.a"
        number = answer.json()["result"]
        fetched = client.get(f"/mj/task/{number}/fetch", headers={**auth, "X-Request-Id": "bad id\nforged line"})
        made_up = fetched.headers["x-request-id"]
        assert made_up != "bad id\nforged line" and len(made_up) == 16
        assert client.get("/healthz").headers["x-request-id"] not in ("", made_up)
        assert client.get("/nothing%0A2026-01-01 INFO journeyd.http: GET /forged 200").status_code == 404

    submit, fetch, health, forged = _lines(caplog, "journeyd.http")
    assert _fields(submit) == {
        "method": "POST",
        "route": "/mj/submit/imagine",
        "path": "/mj/submit/imagine",
        "status": 200,
        "duration_ms": _fields(submit)["duration_ms"],
        "request_id": "req-42.a",
        "key": SECRET[:8],
    }
    assert 0 < _fields(submit)["duration_ms"] < 60_000
    assert _fields(fetch)["route"] == "/mj/task/{id}/fetch" and _fields(fetch)["path"] == f"/mj/task/{number}/fetch"
    assert _fields(fetch)["request_id"] == made_up and _fields(fetch)["key"] == SECRET[:8]
    assert _fields(health)["key"] is None
    text = TextFormatter().format(submit)
    assert text.endswith(" request_id=req-42.a key=jd_obser") and "POST /mj/submit/imagine 200 " in text
    forged_text = TextFormatter().format(forged)
    assert (
        "\n" not in forged_text and 'GET "/nothing\\n2026-01-01 INFO journeyd.http: GET /forged 200" 404' in forged_text
    )
    assert (
        json.loads(JsonFormatter().format(forged))["path"] == "/nothing\n2026-01-01 INFO journeyd.http: GET /forged 200"
    )
    for record in caplog.records:
        for formatter in (TextFormatter(), JsonFormatter()):
            assert SECRET not in formatter.format(record)


def test_each_task_move_logs_its_states_duration_worker_and_request(
    client: TestClient, runtime: Runtime, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answer = client.post("/mj/submit/imagine", json={"prompt": "a crane"}, headers={"X-Request-Id": "submit-1"})
    task = runtime.store.get_task_by_number(int(answer.json()["result"]))
    assert task is not None
    clock.advance(5)
    worker = runtime.inline_worker("worker-7")
    claimed = runtime.store.claim_next(worker.id, clock.now_ms(), worker.lease_ms)
    clock.advance(3)
    worker.run([claimed])  # type: ignore[list-item]
    second = client.post("/mj/submit/imagine", json={"prompt": "a stork"}).json()["result"]
    clock.advance(2)
    client.post(f"/mj/task/{second}/cancel", headers={"X-Request-Id": "cancel-9"})

    moves = [_fields(record) for record in _lines(caplog, "journeyd.tasks")]
    picked = [{k: m[k] for k in ("from", "to", "duration_ms", "worker", "request_id")} for m in moves]
    assert picked == [
        {"from": None, "to": "submitted", "duration_ms": None, "worker": None, "request_id": "submit-1"},
        {"from": "submitted", "to": "in_progress", "duration_ms": 5000, "worker": "worker-7", "request_id": None},
        {"from": "in_progress", "to": "success", "duration_ms": 3000, "worker": "worker-7", "request_id": None},
        {"from": None, "to": "submitted", "duration_ms": None, "worker": None, "request_id": moves[3]["request_id"]},
        {"from": "submitted", "to": "cancelled", "duration_ms": 2000, "worker": None, "request_id": "cancel-9"},
    ]
    assert len(moves[3]["request_id"]) == 16  # made up, as the client sent none
    assert {m["task"] for m in moves[:3]} == {task.id} and moves[0]["number"] == task.number
    assert moves[4]["reason"] == "cancelled by request" and moves[2]["reason"] is None
    text = TextFormatter().format(_lines(caplog, "journeyd.tasks")[1])
    assert f"task {task.id} IMAGINE submitted -> in_progress " in text and "duration_ms=5000 worker=worker-7" in text


def test_a_keys_prefix_follows_its_tasks_into_the_worker(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    add_key(runtime, credits=0)
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        client.post("/mj/submit/imagine", json={"prompt": "an egret"}, headers={"mj-api-secret": SECRET})
    runtime.run_pending()
    moves = [_fields(record) for record in _lines(caplog, "journeyd.tasks")]
    assert [m["to"] for m in moves] == ["submitted", "in_progress", "success"]
    assert {m["key"] for m in moves} == {SECRET[:8]}
