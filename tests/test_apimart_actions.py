"""apimart's describe, blend and shorten: its own paths and snake_case fields, the same rules as /mj."""

from __future__ import annotations

import numpy as np

from tests.conftest import Flow, png_data_url


def picture(shade: tuple[int, int, int]) -> str:
    pixels = np.zeros((96, 96, 3), np.uint8)
    pixels[:48] = shade
    pixels[48:] = (20, 60, 30)
    return png_data_url(pixels)


def test_describe_gives_four_prompts_in_the_task(flow: Flow) -> None:
    task = flow.done(flow.submit("/v1/midjourney/generations/describe", {"image_url": picture((200, 120, 40))}))
    assert (
        task["action"] == "DESCRIBE"
        and len(task["properties"]["prompts"]) == 4
        and len(set(task["properties"]["prompts"])) == 4
    )
    again = flow.done(flow.submit("/v1/midjourney/generations/describe", {"image_urls": [picture((40, 90, 200))]}))
    assert again["properties"]["prompts"] != task["properties"]["prompts"]  # another image, other words


def test_blend_makes_a_grid_whose_u1_works(flow: Flow) -> None:
    body = {"image_urls": [picture((200, 120, 40)), picture((40, 90, 200))], "dimensions": "LANDSCAPE"}
    grid = flow.done(flow.submit("/v1/midjourney/generations/blend", body))
    assert grid["action"] == "BLEND" and len(grid["image_urls"]) == 4
    height, width = flow.image(grid["image_urls"][0]).shape[:2]
    assert width > height  # LANDSCAPE is 3:2
    single = flow.upscale(grid["id"])
    assert len(single["image_urls"]) == 1


def test_shorten_gives_five_prompts(flow: Flow) -> None:
    prompt = "a red fox in the snow, misty forest at dawn, golden light, oil painting"
    task = flow.done(flow.submit("/v1/midjourney/generations/shorten", {"prompt": prompt}))
    assert task["action"] == "SHORTEN" and len(task["properties"]["prompts"]) == 5


def test_bad_actions_are_refused_in_apimarts_envelope_with_nothing_made(flow: Flow) -> None:
    for path, body, status, words in (
        ("/v1/midjourney/generations/blend", {"image_urls": [picture((1, 2, 3))]}, 400, "2 to 5 images"),
        (
            "/v1/midjourney/generations/blend",
            {"image_urls": [picture((1, 2, 3))] * 2, "dimensions": "ROUND"},
            400,
            "dimensions",
        ),
        ("/v1/midjourney/generations/describe", {}, 400, "describe"),
        ("/v1/midjourney/generations/describe", {"image_url": "bm90IGFuIGltYWdl"}, 422, "image_url is not an image"),
        ("/v1/midjourney/generations/shorten", {"prompt": "x" * 5000}, 400, "limit"),
    ):
        answer = flow.post(path, body)
        assert answer.status_code == status, (path, answer.text)
        assert words in answer.json()["error"]["message"], answer.text
    assert flow.runtime.store.list_tasks(None) == []
