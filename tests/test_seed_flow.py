"""The seed document, step by step: imagine, upscale, inpaint, modal with a mask and prompt, result.

`../shared/seeds/000_*.txt`: POST /v1/midjourney/generations/inpaint {"task_id", "speed": "fast"}
answers {"code":200,"data":[{"status":...,"task_id":"task_<ULID>"}]}; the task is MODAL until modal is
called with task_id (the MODAL task), prompt and mask_url; the result is a new grid of 4 candidates.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from journeyd.imaging.composite import feather_for
from tests.conftest import Flow, box_mask, png_data_url

TASK_ID = re.compile(r"^task_[0-9A-HJKMNP-TV-Z]{26}$")


def _beyond_feather(mask: np.ndarray) -> np.ndarray:
    """Pixels farther from the mask than the dilation plus the feather (plus 2 px of rounding)."""
    height, width = mask.shape
    dilate_px, feather_px = feather_for(width, height)
    distance = cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return distance > dilate_px + feather_px + 2


def test_vary_region_follows_the_seed_document(flow: Flow) -> None:
    # imagine: a grid of four with Midjourney's grid buttons
    grid = flow.imagine("a red fox in the snow --ar 3:2")
    assert TASK_ID.match(grid["id"]) and grid["action"] == "IMAGINE" and grid["progress"] == "100%"
    assert len(grid["image_urls"]) == 4 and grid["grid_image_url"]
    assert [b["label"] for b in grid["buttons"]] == ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]

    # upscale: one image of the grid, untouched, with the upscaled buttons
    upscaled = flow.upscale(grid["id"], 1)
    assert upscaled["action"] == "UPSCALE" and len(upscaled["image_urls"]) == 1
    np.testing.assert_array_equal(flow.image(upscaled["image_urls"][0]), flow.image(grid["image_urls"][0]))
    region_button = next(b for b in upscaled["buttons"] if b["label"] == "Vary (Region)")
    assert region_button["customId"].startswith("MJ::Inpaint::1::")

    # inpaint, exactly as the seed sends it: the answer is a MODAL task, not an error
    answer = flow.post("/v1/midjourney/generations/inpaint", {"task_id": upscaled["id"], "speed": "fast"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["code"] == 200 and body["data"][0]["status"] == "modal"
    modal_id = body["data"][0]["task_id"]
    assert TASK_ID.match(modal_id) and modal_id != upscaled["id"]
    assert flow.client.get(f"/v1/tasks/{modal_id}").json()["data"]["status"] == "pending"  # the unified enum's word
    flow.runtime.run_pending()
    waiting = flow.fetch(modal_id)
    assert waiting["status"] == "MODAL" and waiting["action"] == "INPAINT"

    # modal: task_id is the MODAL task; a mask (white = repaint) and a prompt for the region
    parent = flow.image(upscaled["image_urls"][0])
    height, width = parent.shape[:2]
    mask = box_mask(width, height, (width // 4, height // 4, width // 2, height // 2))
    answer = flow.post(
        "/v1/midjourney/generations/modal",
        {"task_id": modal_id, "prompt": "a blue butterfly", "mask_url": png_data_url(mask)},
    )
    assert answer.json() == {"code": 200, "data": [{"status": "submitted", "task_id": modal_id}]}

    # the result: the same task, now a grid of 4 candidates
    result = flow.done(modal_id)
    assert result["action"] == "INPAINT" and result["prompt"] == "a blue butterfly"
    assert result["properties"]["engine"] == "classic"
    assert len(result["image_urls"]) == 4
    assert [b["label"] for b in result["buttons"]][:4] == ["U1", "U2", "U3", "U4"]

    candidates = [flow.image(url) for url in result["image_urls"]]
    far, inside = _beyond_feather(mask), mask > 0
    for candidate in candidates:
        assert candidate.shape == parent.shape
        np.testing.assert_array_equal(candidate[far], parent[far])  # bit-identical beyond the feather
        assert np.abs(candidate[inside].astype(int) - parent[inside]).mean() > 5  # the region was repainted
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(candidates[i][inside], candidates[j][inside]), (i, j)

    # and the candidates can be upscaled again, like any grid
    again = flow.upscale(modal_id, 3)
    np.testing.assert_array_equal(flow.image(again["image_urls"][0]), candidates[2])


def test_inpaint_by_custom_id_and_a_small_transparent_mask(flow: Flow) -> None:
    """The other accepted form (task_id + custom_id) and apimart's convention: white on transparent,
    at any size (resized to the parent)."""
    upscaled = flow.upscale(flow.imagine("green hills under a blue sky")["id"], 2)
    custom_id = next(b["customId"] for b in upscaled["buttons"] if b["label"] == "Vary (Region)")
    modal_id = flow.submit("/v1/midjourney/generations/inpaint", {"task_id": upscaled["id"], "custom_id": custom_id})

    small = np.zeros((32, 32, 4), dtype=np.uint8)  # transparent = keep
    small[8:16, 8:16] = (255, 255, 255, 255)  # opaque white = repaint
    flow.submit("/v1/midjourney/generations/modal", {"task_id": modal_id, "mask_url": png_data_url(small)})
    result = flow.done(modal_id)
    assert result["prompt"] == "green hills under a blue sky"  # empty prompt falls back to the parent's

    parent = flow.image(upscaled["image_urls"][0])
    height, width = parent.shape[:2]
    scaled = box_mask(width, height, (width // 4, height // 4, width // 2, height // 2))
    far = _beyond_feather(scaled)
    for url in result["image_urls"]:
        np.testing.assert_array_equal(flow.image(url)[far], parent[far])
