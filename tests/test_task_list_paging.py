"""`GET /mj/task/list?limit=N&before=ID`: the caller's history, newest first, page by page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from journeyd.clock import ManualClock
from journeyd.domain.keys import ApiKey, hash_secret
from journeyd.runtime import Runtime
from tests.conftest import LOOPBACK, create_app

ALICE = {"mj-api-secret": "jd_alice-secret-for-paging-tests-0123456789"}
BOB = {"Authorization": "Bearer jd_bob-secret-for-paging-tests-0123456789ab"}


@pytest.fixture
def keyed(runtime: Runtime) -> Iterator[TestClient]:
    for name, headers in (("alice", ALICE), ("bob", BOB)):
        secret = next(iter(headers.values())).removeprefix("Bearer ")
        runtime.store.create_key(ApiKey(name.upper(), secret[:8], name, 0, 0), hash_secret(secret))
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        yield client


def imagine(client: TestClient, headers: dict[str, str], prompt: str) -> str:
    answer = client.post("/mj/submit/imagine", json={"prompt": prompt}, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]


def listed(client: TestClient, headers: dict[str, str] = ALICE, **params: Any) -> list[str]:
    answer = client.get("/mj/task/list", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return [task["id"] for task in answer.json()]


def test_pages_walk_the_history_newest_first_without_skipping_or_repeating(
    keyed: TestClient, clock: ManualClock
) -> None:
    mine = []
    for i in range(7):
        mine.append(imagine(keyed, ALICE, f"a lighthouse, take {i}"))
        imagine(keyed, BOB, f"a windmill, take {i}")
        if i % 3 == 0:
            clock.advance(1)  # some tasks share a millisecond, some do not
    newest_first = mine[::-1]
    assert listed(keyed) == newest_first  # no parameters: as before, the latest (up to 100)
    first = listed(keyed, limit=3)
    assert first == newest_first[:3]
    imagine(keyed, ALICE, "a new task while paging")  # lands on top: the next pages do not move
    second = listed(keyed, limit=3, before=first[-1])
    third = listed(keyed, limit=3, before=second[-1])
    assert second == newest_first[3:6] and third == newest_first[6:]
    assert listed(keyed, limit=3, before=third[-1]) == []  # the oldest: nothing before it
    assert listed(keyed, limit=100, before=first[0]) == newest_first[1:]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"before": "abc"}, "no task of yours"),
        ({"before": "1767225600000123"}, "no task of yours"),  # no task has this id
    ],
)
def test_bad_paging_values_are_a_400_in_the_mj_envelope(keyed: TestClient, params: dict[str, Any], says: str) -> None:
    imagine(keyed, ALICE, "a lighthouse")
    answer = keyed.get("/mj/task/list", params=params, headers=ALICE)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["code"] == 4 and says in body["description"] and body["result"] is None, body


def test_another_keys_task_is_no_place_to_page_from(keyed: TestClient) -> None:
    imagine(keyed, ALICE, "a lighthouse")
    bobs = imagine(keyed, BOB, "a windmill")
    answer = keyed.get("/mj/task/list", params={"before": bobs}, headers=ALICE)
    assert answer.status_code == 400 and "no task of yours" in answer.json()["description"]
    assert listed(keyed, BOB, before=bobs) == []  # Bob's own: his oldest, so an empty page
