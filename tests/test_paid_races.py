"""Races in paid flows, through the API: concurrent modals, the per-key queue cap, and keys that are gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from journeyd.api.auth import Authenticator
from journeyd.clock import ManualClock
from journeyd.domain.keys import ApiKey, hash_secret
from journeyd.runtime import build_runtime
from tests.conftest import LOOPBACK, Flow, TestClient, box_mask, create_app, make_settings, png_data_url
from tests.store_contract import race

SECRET = "jd_race_key_0123456789"
HEADERS = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture
def keyed(tmp_path: Path, clock: ManualClock):  # type: ignore[no-untyped-def]
    runtime = build_runtime(make_settings(tmp_path, max_queued_per_key=5), clock=clock, seed=11)
    runtime.store.create_key(ApiKey("KEY1", SECRET[:8], "race", 0, 0), hash_secret(SECRET))
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        yield Flow(client, runtime, HEADERS)
    runtime.store.close()


def test_two_modals_at_once_one_wins_and_its_mask_survives_the_loser(keyed: Flow) -> None:
    upscaled = keyed.upscale(keyed.imagine("a quiet harbour --ar 1:1")["id"])
    size = (upscaled["properties"]["width"], upscaled["properties"]["height"])
    masks = [
        png_data_url(box_mask(*size, (0, 0, size[0] // 2, size[1] // 2))),
        png_data_url(box_mask(*size, (size[0] // 2, size[1] // 2, size[0], size[1]))),
    ]
    for _ in range(10):
        modal_id = keyed.submit("/v1/midjourney/generations/inpaint", {"task_id": upscaled["id"]})
        answers = race(
            2,
            lambda i, modal_id=modal_id: keyed.post(
                "/v1/midjourney/generations/modal", {"task_id": modal_id, "prompt": f"boat {i}", "mask_url": masks[i]}
            ),
        )
        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
        done = keyed.done(modal_id)  # the winner runs on its own mask: none was deleted or overwritten
        winner = next(i for i, a in enumerate(answers) if a.status_code == 200)
        assert done["prompt"] == f"boat {winner}"
        left = sorted(p.name for p in (keyed.runtime.settings.images_dir / modal_id.removeprefix("task_")).iterdir())
        assert len([name for name in left if name.startswith("mask")]) == 1, left


def test_forty_submits_at_once_admit_exactly_the_cap(keyed: Flow) -> None:
    answers = race(40, lambda i: keyed.post("/v1/midjourney/generations", {"prompt": f"a lighthouse {i}"}))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 5 + [429] * 35, statuses
    assert keyed.runtime.store.queued_count("KEY1") == 5
    refused = next(a for a in answers if a.status_code == 429).json()
    assert "5 tasks queued or running" in refused["error"]["message"]


def test_revoking_the_last_key_does_not_reopen_anonymous_access_after_a_restart(
    tmp_path: Path, clock: ManualClock
) -> None:
    runtime = build_runtime(make_settings(tmp_path), clock=clock)
    runtime.store.create_key(ApiKey("KEY1", SECRET[:8], "only", 0, 0), hash_secret(SECRET))
    runtime.store.revoke_key("KEY1", 1)
    runtime.store.close()

    restarted = build_runtime(make_settings(tmp_path), clock=clock)  # a new process: nothing cached
    assert isinstance(create_app(restarted, manage_runtime=False).state.auth, Authenticator)
    with TestClient(create_app(restarted, manage_runtime=False), client=LOOPBACK) as client:
        anonymous = client.post("/v1/midjourney/generations", json={"prompt": "a fox"})
        assert anonymous.status_code == 401, anonymous.text
        revoked = client.post("/v1/midjourney/generations", json={"prompt": "a fox"}, headers=HEADERS)
        assert revoked.status_code == 403, revoked.text
    restarted.store.close()
