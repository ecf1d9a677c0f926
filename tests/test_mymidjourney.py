"""The mymidjourney dialect, with the seed document's `button` example, and one task across dialects."""

from __future__ import annotations

import base64
import io
import re
import uuid
from typing import Any

import numpy as np
from PIL import Image

from journeyd.service import Caller
from tests.conftest import Flow, box_mask
from tests.test_seed_flow import _beyond_feather

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _post(flow: Flow, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = flow.client.post(
        f"/api/v1/midjourney/{path}",
        json=body,
        headers={"Content-Type": "application/json", "Authorization": "Bearer anything"},
    )
    return {"status": answer.status_code, **answer.json()}


def _message(flow: Flow, message_id: str) -> dict[str, Any]:
    answer = flow.client.get(f"/api/v1/midjourney/message/{message_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def _webp_base64(mask: np.ndarray) -> str:
    """Raw base64 WebP, no data-URL prefix: the seed's sample mask starts with "UklGR"."""
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, "WEBP", lossless=True)
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_seed_button_example_end_to_end(flow: Flow) -> None:
    flow.headers = {}
    submitted = _post(flow, "imagine", {"prompt": "A little cat running on the grass --ar 3:2", "ref": "job-17"})
    assert submitted["status"] == 200 and submitted["success"] is True and ISO.match(submitted["createdAt"])
    message_id = submitted["messageId"]
    assert uuid.UUID(message_id)
    queued = _message(flow, message_id)
    assert queued["status"] == "QUEUED" and queued["progress"] == 0 and queued["ref"] == "job-17"
    flow.runtime.run_pending()
    done = _message(flow, message_id)
    assert done["status"] == "DONE" and done["progress"] == 100 and done["uri"].endswith("/grid.png")
    assert done["buttons"] == ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]

    upscaled_id = _post(flow, "button", {"messageId": message_id, "button": "U1"})["messageId"]
    flow.runtime.run_pending()
    upscaled = _message(flow, upscaled_id)
    assert upscaled["originatingMessageId"] == message_id and "Vary (Region)" in upscaled["buttons"]

    # the seed's request: messageId, a base64 WebP mask, a prompt, "Vary (Region)"; one step
    parent = flow.image(upscaled["uri"])
    height, width = parent.shape[:2]
    mask = box_mask(width, height, (width // 2, height // 3, width - 8, height - 8))
    answer = _post(
        flow,
        "button",
        {
            "messageId": upscaled_id,
            "mask": _webp_base64(mask),
            "prompt": "A little cat running on the grass",
            "button": "Vary (Region)",
        },
    )
    assert answer["success"] is True and answer["messageId"] != upscaled_id
    region = _message(flow, answer["messageId"])
    assert region["status"] == "QUEUED"  # no MODAL step in this dialect
    flow.runtime.run_pending()
    region = _message(flow, answer["messageId"])
    assert region["status"] == "DONE" and len(region["images"]) == 4
    far = _beyond_feather(mask)
    for url in region["images"]:
        np.testing.assert_array_equal(flow.image(url)[far], parent[far])


def test_bad_buttons_and_missing_masks_are_4xx_with_the_valid_labels(flow: Flow) -> None:
    message_id = _post(flow, "imagine", {"prompt": "a lighthouse"})["messageId"]
    flow.runtime.run_pending()
    unknown = _post(flow, "button", {"messageId": message_id, "button": "u1"})
    assert unknown["status"] == 400 and unknown["success"] is False
    assert "Vary (Region)" in unknown["error"] and "Cancel Job" in unknown["error"]
    region_on_grid = _post(flow, "button", {"messageId": message_id, "button": "Vary (Region)", "mask": "AAAA"})
    assert region_on_grid["status"] == 400 and "upscaled" in region_on_grid["error"]
    upscaled_id = _post(flow, "button", {"messageId": message_id, "button": "U3"})["messageId"]
    flow.runtime.run_pending()
    no_mask = _post(flow, "button", {"messageId": upscaled_id, "button": "Vary (Region)"})
    assert no_mask["status"] == 400 and "mask" in no_mask["error"]
    empty = _post(
        flow,
        "button",
        {"messageId": upscaled_id, "button": "Vary (Region)", "mask": _webp_base64(np.zeros((16, 16), np.uint8))},
    )
    assert empty["status"] == 422 and "selects nothing" in empty["error"]
    assert _post(flow, "button", {"messageId": str(uuid.uuid4()), "button": "U1"})["status"] == 404
    # nothing was left behind by the refused presses: only the grid and the upscale exist
    assert len(flow.runtime.service.recent(Caller(None))) == 2


def test_every_label_on_an_upscaled_image_works(flow: Flow) -> None:
    message_id = _post(flow, "imagine", {"prompt": "a red barn"})["messageId"]
    flow.runtime.run_pending()
    upscaled_id = _post(flow, "button", {"messageId": message_id, "button": "U2"})["messageId"]
    flow.runtime.run_pending()
    for label in (
        "Upscale (Subtle)",
        "Upscale (Creative)",
        "Upscale (2x)",
        "Vary (Subtle)",
        "Vary (Strong)",
        "Zoom Out 2x",
        "Zoom Out 1.5x",
        "Make Square",
        "⬅️",
        "➡️",
        "⬆",
        "⬇️",
    ):
        answer = _post(flow, "button", {"messageId": upscaled_id, "button": label})
        assert answer["status"] == 200, (label, answer)
        flow.runtime.run_pending()
        assert _message(flow, answer["messageId"])["status"] == "DONE", label


def test_a_prompt_with_a_variation_is_a_remix(flow: Flow) -> None:
    message_id = _post(flow, "imagine", {"prompt": "a red barn --ar 3:2 --s 300"})["messageId"]
    flow.runtime.run_pending()
    remixed = _post(flow, "button", {"messageId": message_id, "button": "V2", "prompt": "a blue barn in snow"})
    flow.runtime.run_pending()
    message = _message(flow, remixed["messageId"])
    assert message["prompt"] == "a blue barn in snow" and message["status"] == "DONE"
    as_mj = flow.client.get(f"/mj/task/{remixed['messageId']}/fetch").json()
    assert as_mj["promptEn"] == "a blue barn in snow --ar 3:2 --stylize 300"  # the parent's flags carry over


def test_cancel_job(flow: Flow) -> None:
    message_id = _post(flow, "imagine", {"prompt": "slow job"})["messageId"]
    answer = _post(flow, "button", {"messageId": message_id, "button": "Cancel Job"})
    assert answer["success"] is True
    cancelled = _message(flow, message_id)
    assert cancelled["status"] == "FAIL" and "cancelled" in cancelled["error"]


def test_one_task_through_three_dialects(flow: Flow) -> None:
    """Made by mymidjourney, fetched and pressed through /mj, finished through apimart."""
    message_id = _post(flow, "imagine", {"prompt": "three dialects --ar 1:1"})["messageId"]
    flow.runtime.run_pending()
    as_mj = flow.client.get(f"/mj/task/{message_id}/fetch").json()
    assert as_mj["id"].isdigit() and as_mj["status"] == "SUCCESS"
    as_apimart = flow.fetch(as_mj["id"])
    assert as_apimart["id"].startswith("task_") and as_apimart["image_urls"] == [u["url"] for u in as_mj["imageUrls"]]
    assert flow.fetch(message_id)["id"] == as_apimart["id"] == flow.fetch(as_apimart["id"])["id"]

    u4 = next(b["customId"] for b in as_mj["buttons"] if b["label"] == "U4")
    upscaled = flow.client.post("/mj/submit/action", json={"taskId": as_mj["id"], "customId": u4}).json()["result"]
    flow.runtime.run_pending()
    modal_id = flow.submit("/v1/midjourney/generations/inpaint", {"task_id": upscaled})
    flow.submit(
        "/v1/midjourney/generations/modal",
        {"task_id": modal_id, "mask_url": base64.b64encode(_png(box_mask(32, 32, (0, 0, 16, 16)))).decode()},
    )
    flow.runtime.run_pending()
    finished = _message(flow, flow.fetch(modal_id)["id"].removeprefix("task_"))
    assert finished["status"] == "DONE" and len(finished["images"]) == 4
    mj_view = flow.client.get(f"/mj/task/{modal_id}/fetch").json()
    assert mj_view["action"] == "INPAINT" and mj_view["parentId"] == upscaled


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
