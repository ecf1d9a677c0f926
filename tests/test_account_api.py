"""`GET /v1/account`: whether the server wants keys, and the presented key's credits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from journeyd.clock import ManualClock
from journeyd.domain.keys import ApiKey, hash_secret
from journeyd.runtime import Runtime, build_runtime
from tests.conftest import LOOPBACK, create_app, make_settings

SECRET = "jd_account-secret-0123456789abcdefghijklmnopqrs"


@pytest.fixture
def priced(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[TestClient, Runtime]]:
    runtime = build_runtime(make_settings(tmp_path, prices=json.dumps({"midjourney@imagine": 3})), clock=clock)
    runtime.store.create_key(ApiKey("KEY1", SECRET[:8], "studio", 10, 0), hash_secret(SECRET))
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        yield client, runtime
    runtime.store.close()


def test_without_keys_the_loopback_caller_has_no_key_to_show(client: TestClient) -> None:
    answer = client.get("/v1/account")
    assert answer.status_code == 200 and answer.json() == {"keysRequired": False, "key": None}
    assert client.get("/v1/account", headers={"Authorization": "Bearer anything"}).json()["key"] is None


def test_a_key_sees_its_name_prefix_and_balance_as_it_spends(priced: tuple[TestClient, Runtime]) -> None:
    client, _ = priced
    for headers in ({"Authorization": f"Bearer {SECRET}"}, {"mj-api-secret": SECRET}, {"Authorization": SECRET}):
        answer = client.get("/v1/account", headers=headers)
        assert answer.json() == {"keysRequired": True, "key": {"prefix": SECRET[:8], "name": "studio", "balance": 10}}
    submitted = client.post("/mj/submit/imagine", json={"prompt": "a kite"}, headers={"mj-api-secret": SECRET})
    assert submitted.status_code == 200, submitted.text
    assert client.get("/v1/account", headers={"mj-api-secret": SECRET}).json()["key"]["balance"] == 7


def test_an_unknown_missing_or_revoked_key_is_refused_in_apimarts_envelope(priced: tuple[TestClient, Runtime]) -> None:
    client, runtime = priced
    for headers in ({"Authorization": "Bearer jd_not-a-key"}, {}):
        answer = client.get("/v1/account", headers=headers)
        assert answer.status_code == 401 and answer.json()["code"] == 401, answer.text
        assert answer.json()["error"]["type"] == "unauthorized" and answer.json()["error"]["message"]
    runtime.store.revoke_key("KEY1", 1)
    answer = client.get("/v1/account", headers={"Authorization": f"Bearer {SECRET}"})
    assert answer.status_code == 403 and answer.json()["error"]["type"] == "forbidden", answer.text


def test_the_document_describes_it_like_every_other_route(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/v1/account"]["get"]
    assert operation["tags"] == ["apimart"] and operation["summary"] and operation["security"]
    assert {"200", "400", "401", "403"} == set(operation["responses"])
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Account")
    assert operation["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/ApimartError")
