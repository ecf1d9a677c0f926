"""Idempotency-Key on every submit: a retried request gets its first task, never a second charge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from journeyd.clock import ManualClock
from journeyd.domain.keys import ApiKey, hash_secret
from journeyd.runtime import Runtime, build_runtime
from tests.conftest import LOOPBACK, Flow, TestClient, box_mask, create_app, make_settings, png_data_url
from tests.servers import Server, journeyd
from tests.store_contract import race

PRICES = {"midjourney@imagine": 4, "midjourney@upscale": 1, "midjourney@inpaint": 3, "midjourney@modal": 2}
SECRETS = {"KEY1": "jd_idem_key_one_0123456789", "KEY2": "jd_idem_key_two_0123456789"}


@pytest.fixture
def runtime(tmp_path: Path, clock: ManualClock):  # type: ignore[no-untyped-def]
    runtime = build_runtime(make_settings(tmp_path, prices=json.dumps(PRICES)), clock=clock, seed=5)
    for key_id, secret in SECRETS.items():
        runtime.store.create_key(ApiKey(key_id, secret[:8], key_id, 100, 0), hash_secret(secret))
    yield runtime
    runtime.store.close()


@pytest.fixture
def client(runtime: Runtime):  # type: ignore[no-untyped-def]
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        yield client


def _headers(key_id: str = "KEY1", idempotency: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {SECRETS[key_id]}"}
    if idempotency is not None:
        headers["Idempotency-Key"] = idempotency
    return headers


def _balance(runtime: Runtime, key_id: str = "KEY1") -> int:
    key = runtime.store.get_key(key_id)
    assert key is not None
    return key.balance


def _tasks(runtime: Runtime, key_id: str = "KEY1") -> int:
    return len(runtime.store.list_tasks(key_id, limit=1000))


SUBMITS = [  # path, body, how to read the task id from the answer
    ("/v1/midjourney/generations", {"prompt": "a red fox"}, lambda a: a["data"][0]["task_id"]),
    ("/mj/submit/imagine", {"prompt": "a red fox", "state": "s1"}, lambda a: a["result"]),
    ("/api/v1/midjourney/imagine", {"prompt": "a red fox", "ref": "r1"}, lambda a: a["messageId"]),
]


@pytest.mark.parametrize(("path", "body", "task_id"), SUBMITS, ids=["apimart", "mj", "mymidjourney"])
def test_a_retry_with_the_same_key_and_body_gets_the_first_task_and_one_charge(
    client: TestClient, runtime: Runtime, path: str, body: dict[str, Any], task_id: Any
) -> None:
    first = client.post(path, json=body, headers=_headers(idempotency="retry-0001"))
    again = client.post(path, json=body, headers=_headers(idempotency="retry-0001"))
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert task_id(first.json()) == task_id(again.json())
    assert _tasks(runtime) == 1 and _balance(runtime) == 100 - 4
    other = client.post(path, json=body, headers=_headers(idempotency="retry-0002"))  # a new key is a new submit
    assert task_id(other.json()) != task_id(first.json()) and _balance(runtime) == 100 - 8


@pytest.mark.parametrize(("path", "body", "task_id"), SUBMITS, ids=["apimart", "mj", "mymidjourney"])
def test_the_same_key_with_another_body_is_a_422_and_charges_nothing(
    client: TestClient, runtime: Runtime, path: str, body: dict[str, Any], task_id: Any
) -> None:
    assert client.post(path, json=body, headers=_headers(idempotency="k-1")).status_code == 200
    changed = client.post(path, json={**body, "prompt": "a blue fox"}, headers=_headers(idempotency="k-1"))
    assert changed.status_code == 422, changed.text
    assert "different request" in changed.text
    assert _tasks(runtime) == 1 and _balance(runtime) == 100 - 4


def test_a_key_used_at_another_endpoint_is_another_request(client: TestClient) -> None:
    body = {"prompt": "a red fox"}
    assert client.post("/mj/submit/imagine", json=body, headers=_headers(idempotency="k-2")).status_code == 200
    fast = client.post("/mj-fast/mj/submit/imagine", json=body, headers=_headers(idempotency="k-2"))
    assert fast.status_code == 422 and fast.json()["code"] == 4, fast.text


def test_keys_belong_to_one_api_key(client: TestClient, runtime: Runtime) -> None:
    body = {"prompt": "a red fox"}
    one = client.post("/v1/midjourney/generations", json=body, headers=_headers("KEY1", "shared"))
    two = client.post("/v1/midjourney/generations", json=body, headers=_headers("KEY2", "shared"))
    assert one.json()["data"][0]["task_id"] != two.json()["data"][0]["task_id"]
    assert _balance(runtime, "KEY1") == _balance(runtime, "KEY2") == 96


def test_a_key_is_kept_for_24_hours(client: TestClient, runtime: Runtime, clock: ManualClock) -> None:
    body = {"prompt": "a red fox"}
    first = client.post("/v1/midjourney/generations", json=body, headers=_headers(idempotency="day"))
    clock.advance(24 * 3600 - 1)
    assert client.post("/v1/midjourney/generations", json=body, headers=_headers(idempotency="day")).json() == (
        first.json()
    )
    clock.advance(2)
    later = client.post("/v1/midjourney/generations", json=body, headers=_headers(idempotency="day"))
    assert later.json() != first.json() and _tasks(runtime) == 2
    clock.advance(24 * 3600 + 1)
    runtime.maintenance.run_once()  # upkeep forgets keys whose day is over
    assert runtime.store.forget_idempotency_keys(clock.now_ms()) == 0


def test_twins_sent_at_once_make_one_task(client: TestClient, runtime: Runtime) -> None:
    answers = race(
        6,
        lambda i: client.post(
            "/v1/midjourney/generations", json={"prompt": "a red fox"}, headers=_headers(idempotency="twin")
        ),
    )
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
    assert len({a.json()["data"][0]["task_id"] for a in answers}) == 1
    assert _tasks(runtime) == 1 and _balance(runtime) == 96


def test_retried_buttons_and_modals_are_answered_not_refused(client: TestClient, runtime: Runtime) -> None:
    flow = Flow(client, runtime, _headers())
    grid = flow.imagine("a harbour --ar 1:1")
    press = {"task_id": grid["id"], "index": 1}
    upscale = [
        client.post("/v1/midjourney/generations/upscale", json=press, headers=_headers(idempotency="u1"))
        for _ in range(2)
    ]
    assert upscale[0].json() == upscale[1].json()
    upscaled = flow.done(upscale[0].json()["data"][0]["task_id"])
    inpaint = {"task_id": upscaled["id"]}
    modal_id = client.post("/v1/midjourney/generations/inpaint", json=inpaint, headers=_headers(idempotency="i1"))
    modal_id = modal_id.json()["data"][0]["task_id"]
    size = (upscaled["properties"]["width"], upscaled["properties"]["height"])
    modal = {"task_id": modal_id, "prompt": "a boat", "mask_url": png_data_url(box_mask(*size, (0, 0, 40, 40)))}
    answers = [
        client.post("/v1/midjourney/generations/modal", json=modal, headers=_headers(idempotency="m1"))
        for _ in range(2)
    ]
    # without the key the second would be a 409 (the task is no longer waiting for a modal)
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert answers[0].json() == answers[1].json()
    assert client.post("/v1/midjourney/generations/modal", json=modal, headers=_headers()).status_code == 409
    charged = [e for e in runtime.store.ledger(key_id="KEY1") if e.kind == "charge"]
    assert sorted(e.price_key for e in charged) == [
        "midjourney@imagine",
        "midjourney@inpaint",
        "midjourney@modal",
        "midjourney@upscale",
    ]


@pytest.mark.parametrize("value", ["", " ", "x" * 256, "two words", 'quo"te', "é"])
def test_a_malformed_key_is_a_400(client: TestClient, value: str) -> None:
    answer = client.post(
        "/v1/midjourney/generations",
        json={"prompt": "a fox"},
        headers={**_headers(), "Idempotency-Key": value.encode()},  # type: ignore[dict-item]
    )
    assert answer.status_code == 400 and "Idempotency-Key" in answer.text, answer.text


def test_a_quoted_key_is_the_same_key(client: TestClient, runtime: Runtime) -> None:
    client.post("/v1/midjourney/generations", json={"prompt": "a fox"}, headers=_headers(idempotency='"abc"'))
    client.post("/v1/midjourney/generations", json={"prompt": "a fox"}, headers=_headers(idempotency="abc"))
    assert _tasks(runtime) == 1


def test_after_kill_9_a_retry_gets_the_committed_task_and_no_second_charge(tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret = journeyd("keys", "create", "--credits", "50", env={"JOURNEYD_DATA_DIR": str(data)}).stdout.strip()
    env = {"JOURNEYD_PRICES": json.dumps(PRICES), "JOURNEYD_WORKERS": "0"}
    headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": "order-42"}
    body = {"prompt": "storm over a harbour"}
    server = Server(data, env=env).start()
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        first = client.post("/v1/midjourney/generations", json=body).json()
    server.kill()  # the client's connection could have broken here: it never knows whether it went through
    server = Server(data, env=env, port=server.port).start()
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            retried = client.post("/v1/midjourney/generations", json=body).json()
            assert retried == first
            assert len(client.get("/mj/task/list").json()) == 1
    finally:
        server.stop()
    keys = journeyd("keys", "list", env={"JOURNEYD_DATA_DIR": str(data)}).stdout
    assert "46 credits" in keys, keys
