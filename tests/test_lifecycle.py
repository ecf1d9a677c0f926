"""Task rules beyond the apimart surface: speed order, each action's pixels, cancel, recovery."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from journeyd.clock import ManualClock
from journeyd.domain.errors import InvalidRequest, TaskCancelled
from journeyd.domain.lifecycle import Status
from journeyd.imaging.codec import decode_png
from journeyd.imaging.composite import feather_for
from journeyd.runtime import Runtime
from journeyd.service import Caller, ModalInput
from journeyd.worker import _Heartbeat
from tests.conftest import Flow

LOCAL = Caller(None)


def _done(runtime: Runtime, task_id: str):  # type: ignore[no-untyped-def]
    runtime.run_pending()
    task = runtime.store.get_task(task_id)
    assert task is not None and task.status is Status.SUCCESS, task
    return task


def test_turbo_runs_before_fast_before_relax_then_first_come_first_served(runtime: Runtime) -> None:
    ids = {}
    for name, speed in [
        ("relax1", "relax"),
        ("fast1", "fast"),
        ("turbo1", "turbo"),
        ("relax2", "relax"),
        ("fast2", "fast"),
        ("turbo2", "turbo"),
    ]:
        ids[runtime.service.imagine(LOCAL, name, overrides={"speed": speed}).id] = name
    assert runtime.store.queue_position(next(i for i, n in ids.items() if n == "relax2")) == 5
    order = []
    while (task := runtime.store.claim_next("w", runtime.clock.now_ms(), 60_000)) is not None:
        order.append(ids[task.id])
    assert order == ["turbo1", "turbo2", "fast1", "fast2", "relax1", "relax2"]


def test_upscale_subtle_and_creative_double_the_size(flow: Flow) -> None:
    upscaled = flow.upscale(flow.imagine("a mossy stone --ar 2:3")["id"], 2)
    width, height = upscaled["properties"]["width"], upscaled["properties"]["height"]
    buttons = {b["label"]: b["customId"] for b in upscaled["buttons"]}
    for label in ("Upscale (Subtle)", "Upscale (Creative)"):
        task_id = flow.submit(
            "/v1/midjourney/generations/upscale", {"task_id": upscaled["id"], "custom_id": buttons[label]}
        )
        task = flow.done(task_id)
        assert (task["properties"]["width"], task["properties"]["height"]) == (2 * width, 2 * height)
        assert flow.image(task["image_urls"][0]).shape == (2 * height, 2 * width, 3)
        assert [b["label"] for b in task["buttons"]][2] == "Vary (Subtle)"


def test_vary_strong_changes_more_than_vary_subtle(flow: Flow) -> None:
    upscaled = flow.upscale(flow.imagine("a lighthouse at sunset")["id"])
    parent = flow.image(upscaled["image_urls"][0]).astype(int)
    change = {}
    for path in ("low-variation", "high-variation"):
        task = flow.done(flow.submit(f"/v1/midjourney/generations/{path}", {"task_id": upscaled["id"]}))
        images = [flow.image(url).astype(int) for url in task["image_urls"]]
        change[path] = np.mean([np.abs(image - parent).mean() for image in images])
    assert 0 < change["low-variation"] < change["high-variation"]


def test_zoom_out_keeps_the_parent_bit_identical_in_the_middle(flow: Flow) -> None:
    upscaled = flow.upscale(flow.imagine("a castle on a hill")["id"])
    parent = flow.image(upscaled["image_urls"][0])
    task = flow.done(flow.submit("/v1/midjourney/generations/zoom", {"task_id": upscaled["id"]}))
    height, width = parent.shape[:2]
    for url in task["image_urls"]:
        zoomed = flow.image(url)
        assert zoomed.shape[0] >= 2 * height and zoomed.shape[1] >= 2 * width
        y, x = (zoomed.shape[0] - height) // 2, (zoomed.shape[1] - width) // 2
        _, feather_px = feather_for(zoomed.shape[1], zoomed.shape[0])
        m = feather_px + 2
        np.testing.assert_array_equal(zoomed[y + m : y + height - m, x + m : x + width - m], parent[m:-m, m:-m])


def test_pan_extends_one_side_and_chains_with_region(flow: Flow) -> None:
    upscaled = flow.upscale(flow.imagine("a beach")["id"])
    parent = flow.image(upscaled["image_urls"][0])
    height, width = parent.shape[:2]
    pan = flow.done(flow.submit("/v1/midjourney/generations/pan", {"task_id": upscaled["id"], "direction": "left"}))
    panned = flow.image(pan["image_urls"][0])
    assert panned.shape[0] == height and panned.shape[1] > width
    _, feather_px = feather_for(panned.shape[1], panned.shape[0])
    np.testing.assert_array_equal(panned[:, -width + feather_px + 2 :], parent[:, feather_px + 2 :])


def test_custom_zoom_goes_through_modal_with_zoom_in_the_prompt(flow: Flow) -> None:
    upscaled = flow.upscale(flow.imagine("a forest --ar 1:1")["id"])
    custom = next(b["customId"] for b in upscaled["buttons"] if b["label"] == "Custom Zoom")
    answer = flow.post("/v1/midjourney/generations/zoom", {"task_id": upscaled["id"], "custom_id": custom})
    assert answer.json()["data"][0]["status"] == "modal"
    modal_id = answer.json()["data"][0]["task_id"]
    nothing = flow.post("/v1/midjourney/generations/modal", {"task_id": modal_id, "prompt": "a forest --zoom 1"})
    assert nothing.status_code == 400
    flow.submit(
        "/v1/midjourney/generations/modal", {"task_id": modal_id, "prompt": "a misty forest --zoom 1.5 --ar 2:1"}
    )
    task = flow.done(modal_id)
    width, height = task["properties"]["width"], task["properties"]["height"]
    assert width == 2 * height and height >= 1.5 * upscaled["properties"]["height"]
    assert "--zoom" not in task["properties"]["finalPrompt"]


def test_reroll_repeats_the_parent_with_a_new_seed(runtime: Runtime) -> None:
    grid = _done(runtime, runtime.service.imagine(LOCAL, "two cats").id)
    again = _done(runtime, runtime.service.press(LOCAL, grid.id, name="reroll").id)
    assert again.action.value == "REROLL" and again.op is grid.op and again.seed != grid.seed
    first = runtime.images.get(grid.result.images[0])  # type: ignore[union-attr]
    assert runtime.images.get(again.result.images[0]) != first  # type: ignore[union-attr]


def test_the_same_seed_reproduces_each_tile(runtime: Runtime) -> None:
    a = _done(runtime, runtime.service.imagine(LOCAL, "a paper boat --seed 77").id)
    b = _done(runtime, runtime.service.imagine(LOCAL, "a paper boat --seed 77").id)
    for key_a, key_b in zip(a.result.images, b.result.images, strict=True):  # type: ignore[union-attr]
        assert runtime.images.get(key_a) == runtime.images.get(key_b)


def test_cancel_stops_a_running_task_at_its_next_step(runtime: Runtime, clock: ManualClock) -> None:
    task = runtime.service.imagine(LOCAL, "a long job")
    claimed = runtime.store.claim_next("w1", clock.now_ms(), 60_000)
    assert claimed is not None and claimed.id == task.id
    runtime.service.cancel(LOCAL, task.id)
    assert runtime.store.get_task(task.id).status is Status.IN_PROGRESS  # type: ignore[union-attr]
    worker = runtime.inline_worker("w1")
    [finished] = worker.run([claimed])
    assert finished.status is Status.CANCELLED and finished.fail_reason == "cancelled by request"


def test_progress_only_moves_forward(runtime: Runtime, clock: ManualClock) -> None:
    task = runtime.service.imagine(LOCAL, "progress")
    runtime.store.claim_next("w", clock.now_ms(), 60_000)
    seen = []
    for percent in (10, 40, 30, 90):
        runtime.store.heartbeat(task.id, "w", clock.now_ms(), 60_000, percent)
        seen.append(runtime.store.get_task(task.id).progress)  # type: ignore[union-attr]
    assert seen == [10, 40, 40, 90]
    runtime.service.cancel(LOCAL, task.id)
    worker = runtime.inline_worker("w")
    with pytest.raises(TaskCancelled):
        _Heartbeat(worker, task)(3, 4)


def test_a_task_whose_worker_died_is_requeued_then_failed_after_max_attempts(
    runtime: Runtime, clock: ManualClock
) -> None:
    task = runtime.service.imagine(LOCAL, "fragile")
    for attempt in range(1, 4):
        assert runtime.store.claim_next(f"dead{attempt}", clock.now_ms(), 60_000) is not None
        clock.advance(61)
        reclaimed = runtime.service.reclaim()
        if attempt < 3:
            assert reclaimed.requeued == [task.id]
    final = runtime.store.get_task(task.id)
    assert final is not None and final.status is Status.FAILURE and "3 times" in (final.fail_reason or "")


def test_region_mask_must_match_an_upscaled_parent_of_any_size(runtime: Runtime) -> None:
    grid = _done(runtime, runtime.service.imagine(LOCAL, "a garden --ar 16:9").id)
    with pytest.raises(InvalidRequest, match="requires an upscaled task"):
        runtime.service.press(LOCAL, grid.id, name="inpaint")
    upscaled = _done(runtime, runtime.service.press(LOCAL, grid.id, name="upscale", index=3).id)
    modal = runtime.service.press(LOCAL, upscaled.id, name="inpaint")
    huge = np.zeros((900, 1600), np.uint8)
    cv2.circle(huge, (800, 450), 200, 255, -1)
    _, png = cv2.imencode(".png", huge)
    submitted = runtime.service.modal(
        LOCAL, modal.id, ModalInput("a fountain", base64.b64encode(png.tobytes()).decode())
    )
    stored = decode_png(runtime.images.get(submitted.args["mask"]))
    assert stored.shape == (upscaled.result.height, upscaled.result.width)  # type: ignore[union-attr]
    assert stored[stored.shape[0] // 2, stored.shape[1] // 2] == 255 and stored[0, 0] == 0
