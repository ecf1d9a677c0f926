"""A fleet's tasks for a model no worker serves: refused at submit while other workers are live, and failed
with a refund once they waited past JOURNEYD_UNSERVED_S, instead of waiting forever. The workers' announcements
are written straight into the store, as `journeyd worker` processes write them; the embedded mode is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from journeyd.clock import ManualClock
from journeyd.domain.keys import ApiKey, hash_secret
from journeyd.runtime import Runtime, build_runtime
from tests.conftest import LOOPBACK, Flow, TestClient, box_mask, create_app, make_settings, png_data_url

SECRET = "jd_roster_key_0123456789"
BROKER = "amqp://guest:guest@127.0.0.1:5672//"  # never reached: these tests do not start the dispatcher
WINDOW_S = 60


def _flow(tmp_path: Path, clock: ManualClock, **settings: object) -> Iterator[Flow]:
    runtime = build_runtime(
        make_settings(tmp_path, prices=json.dumps({"midjourney@imagine": 5}), unserved_s=WINDOW_S, **settings),
        clock=clock,
        seed=5,
    )
    runtime.store.create_key(ApiKey("KEY1", SECRET[:8], "test", 100, 0), hash_secret(SECRET))
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        yield Flow(client, runtime, {"Authorization": f"Bearer {SECRET}"})
    runtime.store.close()


@pytest.fixture
def fleet(tmp_path: Path, clock: ManualClock) -> Iterator[Flow]:
    """An API node of a fleet (a broker is set, so `journeyd worker` processes do the work)."""
    yield from _flow(tmp_path, clock, broker_url=BROKER)


@pytest.fixture
def embedded(tmp_path: Path, clock: ManualClock) -> Iterator[Flow]:
    yield from _flow(tmp_path, clock)


def announce(runtime: Runtime, worker: str, models: list[str] | None) -> None:
    runtime.store.announce_worker(worker, models, runtime.clock.now_ms())


def imagine(flow: Flow, prompt: str) -> object:
    return flow.post("/v1/midjourney/generations", {"prompt": prompt})


def task(flow: Flow, task_id: str) -> dict:
    return flow.fetch(task_id)


def balance(runtime: Runtime) -> int:
    key = runtime.store.get_key("KEY1")
    assert key is not None
    return key.balance


def test_a_submit_for_a_model_no_live_worker_serves_is_refused_naming_what_they_serve(fleet: Flow) -> None:
    announce(fleet.runtime, "sdxl-box", ["7", "default"])
    announce(fleet.runtime, "flux-box", ["8", "default"])
    refused = imagine(fleet, "an anime cat --niji 6")
    assert refused.status_code == 422, refused.text  # type: ignore[attr-defined]
    assert refused.json()["error"]["message"] == (  # type: ignore[attr-defined]
        "no worker serves model niji6; the workers serve 7, 8, default: choose one of those, "
        "or start a worker with that model"
    )
    mj = fleet.post("/mj/submit/imagine", {"prompt": "an anime dog --niji 6"})
    assert mj.status_code == 422 and "no worker serves model niji6" in mj.json()["description"]
    assert fleet.runtime.store.list_tasks("KEY1") == [] and balance(fleet.runtime) == 100  # nothing written or charged
    for prompt in ("a photo of a cat --v 7", "a photo of a cat --v 8", "a photo of a cat"):
        fleet.submit("/v1/midjourney/generations", {"prompt": prompt})


def test_with_no_live_worker_a_submit_waits_then_fails_refunded_after_the_bound(fleet: Flow) -> None:
    task_id = fleet.submit("/v1/midjourney/generations", {"prompt": "an anime cat --niji 6"})  # the row is the truth
    assert balance(fleet.runtime) == 95
    fleet.runtime.clock.advance(WINDOW_S - 1)  # type: ignore[attr-defined]
    fleet.runtime.maintenance.run_once()
    assert task(fleet, task_id)["status"] == "SUBMITTED"
    fleet.runtime.clock.advance(2)  # type: ignore[attr-defined]
    fleet.runtime.maintenance.run_once()
    failed = task(fleet, task_id)
    assert failed["status"] == "FAILURE"
    assert failed["fail_reason"] == (
        "no worker served model niji6 for 60 s (the workers serve nothing (no worker is running)); "
        "the task was refunded"
    )
    assert balance(fleet.runtime) == 100


def test_a_model_counts_as_served_until_its_worker_was_silent_for_the_bound(fleet: Flow) -> None:
    runtime, clock = fleet.runtime, fleet.runtime.clock
    announce(runtime, "anime-box", ["niji6", "default"])
    task_id = fleet.submit("/v1/midjourney/generations", {"prompt": "an anime cat --niji 6"})
    clock.advance(30)  # type: ignore[attr-defined]
    announce(runtime, "anime-box", ["niji6", "default"])  # alive, only busy
    clock.advance(WINDOW_S)  # type: ignore[attr-defined]
    runtime.maintenance.run_once()
    assert task(fleet, task_id)["status"] == "SUBMITTED"  # waited 90 s, but its model was served 60 s ago
    announce(runtime, "sdxl-box", ["7", "default"])
    clock.advance(1)  # type: ignore[attr-defined]
    runtime.maintenance.run_once()
    failed = task(fleet, task_id)
    assert failed["status"] == "FAILURE"
    assert "no worker served model niji6 for 60 s (the workers serve 7, default)" in failed["fail_reason"]
    refused = imagine(fleet, "an anime dog --niji 6")  # the anime box has been silent for 61 s: it no longer counts
    assert refused.status_code == 422 and "the workers serve 7, default:" in refused.text  # type: ignore[attr-defined]


def test_a_worker_serving_any_model_takes_every_submit(fleet: Flow) -> None:
    announce(fleet.runtime, "sdxl-box", ["7", "default"])
    announce(fleet.runtime, "classic-box", None)
    task_id = fleet.submit("/v1/midjourney/generations", {"prompt": "an anime cat --niji 6"})
    fleet.runtime.clock.advance(WINDOW_S // 2)  # type: ignore[attr-defined]
    announce(fleet.runtime, "classic-box", None)
    fleet.runtime.clock.advance(WINDOW_S)  # type: ignore[attr-defined]
    fleet.runtime.maintenance.run_once()
    assert task(fleet, task_id)["status"] == "SUBMITTED"


def test_a_button_on_a_task_whose_model_is_no_longer_served_is_refused(fleet: Flow) -> None:
    runtime, clock = fleet.runtime, fleet.runtime.clock
    announce(runtime, "anime-box", ["niji6", "default"])
    grid = fleet.imagine("an anime cat --niji 6")  # run here by a worker that takes anything
    clock.advance(WINDOW_S + 1)  # type: ignore[attr-defined]
    announce(runtime, "sdxl-box", ["7", "default"])  # the anime box is gone; another one is live
    answer = fleet.post("/v1/midjourney/generations/upscale", {"task_id": grid["id"], "index": 1})
    assert answer.status_code == 422 and "no worker serves model niji6" in answer.text
    assert len(runtime.store.list_tasks("KEY1")) == 1


def test_a_modal_for_a_model_no_longer_served_is_refused_and_the_task_keeps_waiting_for_one(fleet: Flow) -> None:
    runtime, clock = fleet.runtime, fleet.runtime.clock
    announce(runtime, "anime-box", ["niji6", "default"])
    upscaled = fleet.upscale(fleet.imagine("an anime cat --niji 6")["id"])
    modal_id = fleet.submit("/v1/midjourney/generations/inpaint", {"task_id": upscaled["id"]})  # waits in MODAL
    clock.advance(WINDOW_S + 1)  # type: ignore[attr-defined]
    announce(runtime, "sdxl-box", ["7", "default"])
    mask = png_data_url(box_mask(upscaled["properties"]["width"], upscaled["properties"]["height"], (8, 8, 40, 40)))
    answer = fleet.post("/v1/midjourney/generations/modal", {"task_id": modal_id, "prompt": "a moon", "mask_url": mask})
    assert answer.status_code == 422 and "no worker serves model niji6" in answer.text
    assert task(fleet, modal_id)["status"] == "MODAL"  # a modal with another --v, or later, may still finish it
    assert not list(runtime.settings.images_dir.rglob("mask-*"))  # the refused mask is not kept


def test_the_embedded_mode_never_refuses_or_fails_a_task_for_want_of_a_worker(embedded: Flow) -> None:
    announce(embedded.runtime, "sdxl-box", ["7", "default"])  # even if something announced itself
    task_id = embedded.submit("/v1/midjourney/generations", {"prompt": "an anime cat --niji 6"})
    embedded.runtime.clock.advance(WINDOW_S * 10)  # type: ignore[attr-defined]
    embedded.runtime.maintenance.run_once()
    assert task(embedded, task_id)["status"] == "SUBMITTED"  # its worker threads take any model
    assert embedded.done(task_id)["status"] == "SUCCESS"
