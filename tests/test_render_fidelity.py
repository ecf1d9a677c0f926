"""What the server measures and shows of a repainted task: the mask it used, the feather, and how many
pixels beyond the feather differ from the parent (`properties` of the /mj task JSON)."""

from __future__ import annotations

import io
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from journeyd.domain.task import Result
from journeyd.imaging.composite import dilate, feather, feather_for
from journeyd.runtime import Runtime
from tests.conftest import TestClient, box_mask, png_data_url

BOX = (20, 24, 70, 60)  # x0, y0, x1, y1 on the upscaled image


def mj(client: TestClient, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = client.post(path, json=body) if body is not None else client.get(path)
    assert answer.status_code == 200, answer.text
    return answer.json()


def done(client: TestClient, runtime: Runtime, number: str) -> dict[str, Any]:
    runtime.run_pending()
    task = mj(client, f"/mj/task/{number}/fetch")
    assert task["status"] == "SUCCESS", task
    return task


def press(client: TestClient, runtime: Runtime, task: dict[str, Any], needle: str, **modal: Any) -> dict[str, Any]:
    custom_id = next(b["customId"] for b in task["buttons"] if needle in b["customId"])
    number = mj(client, "/mj/submit/action", {"taskId": task["id"], "customId": custom_id})["result"]
    if modal:
        mj(client, "/mj/submit/modal", {"taskId": number, **modal})
    return done(client, runtime, number)


def pixels(client: TestClient, url: str) -> np.ndarray:
    answer = client.get("/" + url.split("://", 1)[1].split("/", 1)[1])
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png", answer.text
    return np.asarray(Image.open(io.BytesIO(answer.content)))


@pytest.fixture
def upscaled(client: TestClient, runtime: Runtime) -> dict[str, Any]:
    grid = done(client, runtime, mj(client, "/mj/submit/imagine", {"prompt": "a harbour at noon"})["result"])
    return press(client, runtime, grid, ":upsample::1")


def region(client: TestClient, runtime: Runtime, upscaled: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    mask = box_mask(upscaled["width"], upscaled["height"], BOX)
    task = press(client, runtime, upscaled, ":Inpaint::1", maskBase64=png_data_url(mask), prompt="a red boat")
    return task, mask


def test_a_region_task_shows_its_mask_its_feather_and_nothing_changed_beyond_it(
    client: TestClient, runtime: Runtime, upscaled: dict[str, Any]
) -> None:
    task, mask = region(client, runtime, upscaled)
    properties = task["properties"]
    assert np.array_equal(pixels(client, properties["maskUrl"]), mask)  # the mask it used, at the image's size
    dilate_px, feather_px = feather_for(upscaled["width"], upscaled["height"])
    assert properties["featherPx"] == feather_px
    assert properties["changedBeyondFeather"] == [0, 0, 0, 0]
    # Checked again here, on the images a client downloads: beyond the dilated mask and its feather,
    # every pixel is the parent's; on the mask, the engine painted something new.
    parent = pixels(client, upscaled["imageUrl"])
    reach = dilate_px + feather_px + 1
    far = cv2.dilate((mask > 0).astype(np.uint8), np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)) == 0
    for url in (image["url"] for image in task["imageUrls"]):
        candidate = pixels(client, url)
        assert not (candidate != parent).any(axis=-1)[far].any()
        assert (candidate != parent).any(axis=-1)[mask > 0].any()


def test_the_count_is_measured_on_the_saved_pixels_so_a_leaking_composite_shows(
    client: TestClient, runtime: Runtime, upscaled: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("journeyd.render.composite", lambda parent, candidate, how: 255 - parent)  # a broken seam
    task, mask = region(client, runtime, upscaled)
    dilate_px, feather_px = feather_for(upscaled["width"], upscaled["height"])
    beyond = int(feather(dilate(mask > 0, dilate_px), feather_px).beyond().sum())
    assert beyond > upscaled["width"] * upscaled["height"] // 2
    assert task["properties"]["changedBeyondFeather"] == [beyond] * 4  # every pixel there differs, and is counted


def test_tasks_that_composite_nothing_show_no_feather_and_no_count(
    client: TestClient, runtime: Runtime, upscaled: dict[str, Any]
) -> None:
    for task in (upscaled, mj(client, f"/mj/task/{upscaled['parentId']}/fetch")):
        assert task["properties"]["featherPx"] == 0 and task["properties"]["changedBeyondFeather"] == []
        assert task["properties"]["maskUrl"] == ""
    zoomed = press(client, runtime, upscaled, "Outpaint::50")  # Zoom Out 2x composites the parent into the canvas
    assert zoomed["properties"]["featherPx"] > 0 and zoomed["properties"]["changedBeyondFeather"] == [0, 0, 0, 0]
    assert zoomed["properties"]["maskUrl"] == ""


def test_the_version_grows_with_every_change(client: TestClient, runtime: Runtime) -> None:
    number = mj(client, "/mj/submit/imagine", {"prompt": "a harbour at dusk"})["result"]
    submitted = mj(client, f"/mj/task/{number}/fetch")["properties"]["version"]
    assert done(client, runtime, number)["properties"]["version"] > submitted


def test_results_stored_before_the_measurement_read_as_none_taken() -> None:
    old = {"kind": "grid", "images": ["t/0.png"], "grid": "t/grid.png", "width": 8, "height": 8}
    assert Result.from_json(old) == Result("grid", ("t/0.png",), "t/grid.png", 8, 8, 0, ())
    measured = Result("grid", ("t/0.png",), "t/grid.png", 8, 8, 4, (0,))
    assert Result.from_json(measured.to_json()) == measured
