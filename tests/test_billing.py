"""Credits: charged on submit, refunded exactly once on failure, cancel or modal expiry."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from journeyd.clock import ManualClock
from journeyd.domain.errors import Conflict
from journeyd.domain.keys import ApiKey, hash_secret
from journeyd.domain.pricing import PriceTable, price_keys
from journeyd.runtime import Runtime, build_runtime
from journeyd.service import Caller
from tests.conftest import LOOPBACK, Flow, TestClient, box_mask, create_app, make_settings, png_data_url

PRICES = {
    "midjourney@imagine": 4,
    "midjourney@imagine-fast": 6,
    "midjourney@imagine-7-turbo": 9,
    "midjourney@upscale": 1,
    "midjourney@inpaint": 3,
    "midjourney@modal": 2,
}
SECRET = "jd_test_key_0123456789"


def test_price_keys_fall_back_to_shorter_ones() -> None:
    assert price_keys("imagine", "7", "fast") == [
        "midjourney@imagine-7-fast",
        "midjourney@imagine-fast",
        "midjourney@imagine-7",
        "midjourney@imagine",
    ]
    table = PriceTable(PRICES)
    assert table.quote("imagine", "7", "turbo").amount == 9  # type: ignore[union-attr]
    assert table.quote("imagine", "6.1", "turbo").amount == 4  # type: ignore[union-attr]
    assert table.quote("imagine", "7", "fast").amount == 6  # type: ignore[union-attr]
    assert table.quote("pan", "7", "fast") is None  # not priced: free
    with pytest.raises(ValueError, match="whole number"):
        PriceTable({"midjourney@imagine": -1})
    with pytest.raises(ValueError, match="must start with"):
        PriceTable({"imagine": 1})


def _runtime(tmp_path: Path, clock: ManualClock, credits: int = 20) -> Runtime:
    runtime = build_runtime(make_settings(tmp_path, prices=json.dumps(PRICES)), clock=clock, seed=7)
    runtime.store.create_key(ApiKey("KEY1", SECRET[:8], "test", credits, 0), hash_secret(SECRET))
    return runtime


@pytest.fixture
def billed(tmp_path: Path, clock: ManualClock):  # type: ignore[no-untyped-def]
    runtime = _runtime(tmp_path, clock)
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        yield Flow(client, runtime, {"Authorization": f"Bearer {SECRET}"})
    runtime.store.close()


def _balance(flow: Flow) -> int:
    key = flow.runtime.store.get_key("KEY1")
    assert key is not None
    return key.balance


def test_submits_are_charged_by_speed_and_a_short_balance_is_402(billed: Flow) -> None:
    billed.imagine("a fox")  # relax: 4
    assert _balance(billed) == 16
    billed.imagine("a fox", speed="fast")  # 6
    assert _balance(billed) == 10
    billed.imagine("a fox", speed="turbo")  # 9
    assert _balance(billed) == 1
    answer = billed.post("/v1/midjourney/generations", {"prompt": "one more"})
    assert answer.status_code == 402
    error = answer.json()["error"]
    assert error["price"] == 4 and error["balance"] == 1 and "4 credits" in error["message"]
    assert _balance(billed) == 1
    charges = [e for e in billed.runtime.store.ledger(key_id="KEY1") if e.kind == "charge"]
    assert [e.price_key for e in charges] == [
        "midjourney@imagine",
        "midjourney@imagine-fast",
        "midjourney@imagine-7-turbo",
    ]


def test_bad_input_leaves_no_charge(billed: Flow) -> None:
    grid = billed.imagine()
    upscaled = billed.upscale(grid["id"])
    modal_id = billed.submit("/v1/midjourney/generations/inpaint", {"task_id": upscaled["id"]})
    before = _balance(billed)
    for body in (
        {"prompt": "x --ar 0:0"},
        {"prompt": "x", "image_urls": ["http://10.0.0.1/a.png"]},
        {"prompt": "x", "image_urls": ["data:image/png;base64,AAAA"]},
    ):
        assert billed.post("/v1/midjourney/generations", body).status_code in (400, 422)
    for mask in ("not base64 at all!", png_data_url(np.zeros((8, 8), np.uint8))):
        assert billed.post("/v1/midjourney/generations/modal", {"task_id": modal_id, "mask_url": mask}).status_code in (
            400,
            422,
        )
    assert billed.post("/v1/midjourney/generations/zoom", {"task_id": grid["id"]}).status_code == 400
    assert _balance(billed) == before
    assert billed.fetch(modal_id)["status"] == "MODAL"


def test_cancel_refunds_once(billed: Flow) -> None:
    service, caller = billed.runtime.service, Caller(billed.runtime.store.get_key("KEY1"))
    task = service.imagine(caller, "queued and cancelled")
    assert _balance(billed) == 16
    assert service.cancel(caller, task.id).status.value == "cancelled"
    assert _balance(billed) == 20
    with pytest.raises(Conflict, match="already ended"):
        service.cancel(caller, task.id)
    assert _balance(billed) == 20
    assert billed.runtime.run_pending() == 0  # a cancelled task never runs


def test_failure_refunds_once(billed: Flow) -> None:
    """A task whose source image vanished from disk fails with a reason and gives the credits back."""
    grid = billed.imagine()
    task_id = billed.submit("/v1/midjourney/generations/upscale", {"task_id": grid["id"], "index": 1})
    assert _balance(billed) == 15
    billed.runtime.images.delete(billed.runtime.store.get_task(task_id.removeprefix("task_")).args["source"])
    billed.runtime.run_pending()
    failed = billed.fetch(task_id)
    assert failed["status"] == "FAILURE" and "FileNotFoundError" in failed["fail_reason"]
    assert _balance(billed) == 16
    refunds = [e for e in billed.runtime.store.ledger(key_id="KEY1") if e.kind == "refund"]
    assert len(refunds) == 1 and refunds[0].amount == 1


def test_modal_expiry_cancels_and_refunds_once(billed: Flow, clock: ManualClock) -> None:
    upscaled = billed.upscale(billed.imagine()["id"])
    modal_id = billed.submit("/v1/midjourney/generations/inpaint", {"task_id": upscaled["id"]})
    assert _balance(billed) == 20 - 4 - 1 - 3
    clock.advance(1799)
    billed.runtime.maintenance.run_once()
    assert billed.fetch(modal_id)["status"] == "MODAL"
    clock.advance(2)
    billed.runtime.maintenance.run_once()
    billed.runtime.maintenance.run_once()
    expired = billed.fetch(modal_id)
    assert expired["status"] == "CANCEL" and "modal window closed" in expired["fail_reason"]
    assert _balance(billed) == 20 - 4 - 1
    answer = billed.post("/v1/midjourney/generations/modal", {"task_id": modal_id, "mask_url": "x"})
    assert answer.status_code == 409 and "modal window closed" in answer.json()["error"]["message"]
    assert _balance(billed) == 20 - 4 - 1


def test_modal_racing_the_expiry_is_settled_exactly_once(billed: Flow, clock: ManualClock) -> None:
    """A modal call that read the task as MODAL just before its window closed loses cleanly."""
    upscaled = billed.upscale(billed.imagine()["id"])
    mask = png_data_url(box_mask(upscaled["properties"]["width"], upscaled["properties"]["height"], (0, 0, 20, 20)))
    outcomes = []
    for _ in range(3):
        modal_id = billed.submit("/v1/midjourney/generations/inpaint", {"task_id": upscaled["id"]})
        clock.advance(1800)  # the window is closed, but the sweep has not run yet
        answers: list[int] = []

        def submit_modal(task_id: str = modal_id, answers: list[int] = answers) -> None:
            body = {"task_id": task_id, "mask_url": mask}
            answers.append(billed.post("/v1/midjourney/generations/modal", body).status_code)

        threads = [threading.Thread(target=submit_modal) for _ in range(4)]
        threads.append(threading.Thread(target=billed.runtime.maintenance.run_once))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        billed.runtime.maintenance.run_once()
        assert answers == [409] * 4
        assert billed.fetch(modal_id)["status"] == "CANCEL"
        outcomes.append(modal_id)
    refunds = [e for e in billed.runtime.store.ledger(key_id="KEY1") if e.kind == "refund"]
    assert sorted(e.task_id for e in refunds) == sorted(t.removeprefix("task_") for t in outcomes)
    assert _balance(billed) == 20 - 4 - 1
    assert not any(list((billed.runtime.settings.images_dir / t.removeprefix("task_")).glob("mask*")) for t in outcomes)


def test_modal_in_time_is_charged_and_never_expires(billed: Flow, clock: ManualClock) -> None:
    upscaled = billed.upscale(billed.imagine()["id"])
    modal_id = billed.submit("/v1/midjourney/generations/inpaint", {"task_id": upscaled["id"]})
    mask = png_data_url(box_mask(upscaled["properties"]["width"], upscaled["properties"]["height"], (0, 0, 20, 20)))
    clock.advance(1799)
    billed.submit("/v1/midjourney/generations/modal", {"task_id": modal_id, "mask_url": mask})
    assert _balance(billed) == 20 - 4 - 1 - 3 - 2
    clock.advance(3600)
    billed.runtime.maintenance.run_once()
    assert billed.done(modal_id)["status"] == "SUCCESS"
    assert _balance(billed) == 20 - 4 - 1 - 3 - 2


def test_modal_expiry_survives_a_restart_exactly_once(tmp_path: Path, clock: ManualClock) -> None:
    first = _runtime(tmp_path, clock)
    caller = Caller(first.store.get_key("KEY1"))
    grid = first.service.imagine(caller, "a tower")
    first.run_pending()
    upscaled = first.service.press(caller, grid.id, name="upscale", index=1)
    first.run_pending()
    modal = first.service.press(caller, upscaled.id, name="inpaint")
    first.store.close()  # the server goes away with the task in MODAL

    clock.advance(3600)
    for _ in range(2):  # two restarts after the window closed
        again = build_runtime(make_settings(tmp_path, prices=json.dumps(PRICES)), clock=clock, seed=8)
        again.start()
        again.stop()
    final = build_runtime(make_settings(tmp_path, prices=json.dumps(PRICES)), clock=clock, seed=9)
    task = final.store.get_task(modal.id)
    assert task is not None and task.status.value == "cancelled"
    refunds = [e for e in final.store.ledger(task_id=modal.id) if e.kind == "refund"]
    assert [e.amount for e in refunds] == [3]
    assert final.store.get_key("KEY1").balance == 20 - 4 - 1  # type: ignore[union-attr]
    final.store.close()


def test_anonymous_loopback_use_is_not_metered(tmp_path: Path, clock: ManualClock) -> None:
    runtime = build_runtime(make_settings(tmp_path, prices=json.dumps(PRICES)), clock=clock, seed=7)
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        assert Flow(client, runtime).imagine()["status"] == "SUCCESS"
    assert runtime.store.ledger() == []
