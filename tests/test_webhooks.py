"""Webhooks against a real HTTP receiver on loopback: signatures, order, retries, restarts, refusals."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from journeyd.clock import ManualClock
from journeyd.runtime import Runtime, build_runtime
from journeyd.service import Caller
from journeyd.webhooks import RETRY_SCHEDULE_S
from tests.conftest import LOOPBACK, TestClient, create_app, make_settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ORDER = {"SUBMITTED": 0, "IN_PROGRESS": 1, "SUCCESS": 2, "FAILURE": 2, "CANCEL": 2, "MODAL": 0}


@dataclass
class Receiver:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # statuses to answer with, in turn; then 200
    delay_s: float = 0.0

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            time.sleep(state.delay_s)
            status = state.answers.pop(0) if state.answers else 200
            state.received.append({"path": self.path, "headers": dict(self.headers), "body": body, "status": status})
            self.send_response(status)
            if status in (301, 302):
                self.send_header("Location", state.url + "/elsewhere")
            if status == 429:
                self.send_header("Retry-After", "1000")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()


def _runtime(tmp_path: Path, clock: ManualClock, **settings: Any) -> Runtime:
    values = {"allow_private_webhooks": True, "webhook_secret": SECRET, "webhook_timeout_s": 1.0, **settings}
    return build_runtime(make_settings(tmp_path, **values), clock=clock, seed=21)


@pytest.fixture
def hooked(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[TestClient, Runtime]]:
    runtime = _runtime(tmp_path, clock)
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        yield client, runtime
    runtime.store.close()


def _verify(delivery: dict[str, Any]) -> dict[str, Any]:
    """Check the signature with the standardwebhooks package's own signing (its verify() also wants
    the timestamp within 5 minutes of the wall clock, which an injected clock is not)."""
    headers = {k.lower(): v for k, v in delivery["headers"].items()}
    timestamp = datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=UTC)
    expected = Webhook(SECRET).sign(headers["webhook-id"], timestamp, delivery["body"].decode())
    assert expected in headers["webhook-signature"].split(" ")
    return json.loads(delivery["body"])


def test_notify_hook_posts_every_change_signed_and_in_order(tmp_path: Path, receiver: Receiver) -> None:
    runtime = _runtime(tmp_path, ManualClock(time.time_ns() // 1_000_000))  # verify() checks the timestamp
    client = TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK)
    answer = client.post(
        "/mj/submit/imagine", json={"prompt": "a windmill", "state": "s-1", "notifyHook": f"{receiver.url}/mj/notify"}
    )
    task_id = answer.json()["result"]
    runtime.notifier.run_once()
    runtime.run_pending()
    runtime.notifier.run_once()
    statuses = [b["status"] for b in receiver.bodies()]
    assert statuses[0] == "SUBMITTED" and statuses[-1] == "SUCCESS" and "IN_PROGRESS" in statuses
    assert [ORDER[s] for s in statuses] == sorted(ORDER[s] for s in statuses)
    progress = [int(b["progress"].rstrip("%")) for b in receiver.bodies()]
    assert progress == sorted(progress) and progress[-1] == 100
    for delivery in receiver.received:
        assert delivery["path"] == "/mj/notify"
        headers = {k.lower(): v for k, v in delivery["headers"].items()}
        payload = Webhook(SECRET).verify(delivery["body"], headers)  # raises on a bad signature
        assert payload["id"] == task_id and payload["state"] == "s-1"  # the full Task JSON
    ids = [d["headers"]["webhook-id"] for d in receiver.received]
    assert len(set(ids)) == len(ids)
    assert receiver.bodies()[-1]["imageUrl"].startswith("http://127.0.0.1:8080/images/")
    assert all(row["state"] == "delivered" for row in runtime.store.outbox(runtime.service.get(_local(), task_id).id))


def _local() -> Caller:
    return Caller(None)


def test_retries_with_backoff_and_never_a_stale_update_after_a_newer_one(
    hooked, receiver: Receiver, clock: ManualClock
) -> None:  # type: ignore[no-untyped-def]
    client, runtime = hooked
    receiver.answers = [500, 503, 502]
    client.post("/mj/submit/imagine", json={"prompt": "a tide pool", "notifyHook": receiver.url})
    runtime.notifier.run_once()  # SUBMITTED: 500
    assert [d["status"] for d in receiver.received] == [500]
    runtime.notifier.run_once()
    assert len(receiver.received) == 1  # not due yet: the next try is ~5 s away
    clock.advance(RETRY_SCHEDULE_S[0] * 1.2)
    runtime.notifier.run_once()  # the same update again, same webhook-id: 503
    assert len(receiver.received) == 2
    assert receiver.received[0]["headers"]["webhook-id"] == receiver.received[1]["headers"]["webhook-id"]
    runtime.run_pending()  # the task runs: newer updates wait behind the failing one
    clock.advance(RETRY_SCHEDULE_S[1] * 1.2)
    runtime.notifier.run_once()
    for _ in range(10):
        clock.advance(60)
        runtime.notifier.run_once()
    statuses = [json.loads(d["body"])["status"] for d in receiver.received]
    assert statuses[:2] == ["SUBMITTED", "SUBMITTED"] and statuses[-1] == "SUCCESS"
    assert [ORDER[s] for s in statuses] == sorted(ORDER[s] for s in statuses)
    for delivery in receiver.received:
        _verify(delivery)


def test_a_receiver_that_redirects_or_throttles_is_retried_not_followed(
    hooked, receiver: Receiver, clock: ManualClock
) -> None:  # type: ignore[no-untyped-def]
    client, runtime = hooked
    receiver.answers = [302, 429]
    client.post("/mj/submit/imagine", json={"prompt": "a kite", "notifyHook": receiver.url})
    runtime.notifier.run_once()
    clock.advance(6)
    runtime.notifier.run_once()
    assert [d["path"] for d in receiver.received] == ["/", "/"]  # the Location was never requested
    clock.advance(RETRY_SCHEDULE_S[1] * 1.2)  # the schedule's next step has passed...
    runtime.notifier.run_once()
    assert len(receiver.received) == 2  # ...but the receiver asked for 1000 s
    clock.advance(1000)
    runtime.notifier.run_once()
    assert receiver.received[-1]["status"] == 200


def test_a_slow_receiver_times_out_quickly(hooked, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    client, runtime = hooked
    receiver.delay_s = 3
    task_id = client.post("/mj/submit/imagine", json={"prompt": "x", "notifyHook": receiver.url}).json()["result"]
    started = time.monotonic()
    runtime.notifier.run_once()
    assert time.monotonic() - started < 2.5
    outbox = runtime.store.outbox(runtime.service.get(_local(), task_id).id)
    assert outbox[0]["state"] == "pending" and "did not answer" in outbox[0]["last_error"]


def test_deliveries_survive_a_restart(tmp_path: Path, clock: ManualClock, receiver: Receiver) -> None:
    first = _runtime(tmp_path, clock)
    with TestClient(create_app(first, manage_runtime=False), client=LOOPBACK) as client:
        answer = client.post(
            "/api/v1/midjourney/imagine",
            json={"prompt": "a bonfire", "ref": "r-9", "webhookOverride": f"{receiver.url}/mmj"},
        )
    first.run_pending()
    receiver.answers = [503]
    first.notifier.run_once()  # the receiver is down
    first.store.close()  # the server goes away with deliveries pending

    second = _runtime(tmp_path, clock)  # the server starts again
    create_app(second, manage_runtime=False)
    clock.advance(3600)
    for _ in range(4):
        second.notifier.run_once()
    second.store.close()
    bodies = receiver.bodies()
    assert bodies[-1]["status"] == "DONE" and bodies[-1]["ref"] == "r-9"
    assert bodies[-1]["messageId"] == answer.json()["messageId"]
    assert isinstance(bodies[-1]["progress"], int) and bodies[-1]["buttons"][0] == "U1"
    for delivery in receiver.received:
        _verify(delivery)


def test_private_targets_are_refused_unless_allowed(tmp_path: Path, clock: ManualClock) -> None:
    runtime = build_runtime(make_settings(tmp_path), clock=clock, seed=1)
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        for hook in ("http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://169.254.169.254/latest"):
            answer = client.post("/mj/submit/imagine", json={"prompt": "x", "notifyHook": hook})
            assert answer.status_code == 422 and answer.json()["code"] == 4, answer.text
            assert "notifyHook" in answer.json()["description"]
        answer = client.post("/api/v1/midjourney/imagine", json={"prompt": "x", "webhookOverride": "ftp://a/b"})
        assert answer.status_code == 400 and "webhookOverride" in answer.json()["error"]
    assert runtime.service.recent(_local()) == []


def test_the_operators_default_hook_gets_tasks_that_name_none(
    tmp_path: Path, clock: ManualClock, receiver: Receiver
) -> None:
    runtime = _runtime(tmp_path, clock, notify_hook=f"{receiver.url}/all")
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        flow_id = client.post("/v1/midjourney/generations", json={"prompt": "apimart too"}).json()["data"][0]
    runtime.run_pending()
    runtime.notifier.run_once()
    bodies = receiver.bodies()
    assert {d["path"] for d in receiver.received} == {"/all"}
    assert bodies[-1]["status"] == "SUCCESS" and flow_id["task_id"].endswith(
        runtime.store.get_task_by_number(int(bodies[-1]["id"])).id
    )
    runtime.store.close()
