"""Describe, Blend and Shorten through /mj, as a client presses their buttons: each answer's prompts and
pictures, the buttons that imagine them, the prices and refunds, and the bad input each refuses."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from journeyd.clock import ManualClock
from journeyd.domain.keys import ApiKey, hash_secret
from journeyd.runtime import Runtime, build_runtime
from journeyd.service import ACCEPT_EVERYTHING
from tests.conftest import LOOPBACK, TestClient, create_app, make_settings, png_data_url

SECRET = "jd_actions_key_0123456789"
PRICES = {
    "midjourney@imagine": 4,
    "midjourney@describe": 2,
    "midjourney@blend": 5,
    "midjourney@shorten": 1,
    "midjourney@upscale": 1,
    "midjourney@modal": 3,
}
CREDITS = 100
NUMBERS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣")


class Mj:
    """A /mj client with a key, the worker run in between."""

    def __init__(self, client: TestClient, runtime: Runtime) -> None:
        self.client, self.runtime = client, runtime
        self.headers = {"mj-api-secret": SECRET}

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.client.post(path, json=body, headers=self.headers)

    def submit(self, path: str, body: dict[str, Any], code: int = 1) -> dict[str, Any]:
        answer = self.post(path, body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["code"] == code, answer.text
        return answer.json()

    def fetch(self, task_id: str) -> dict[str, Any]:
        answer = self.client.get(f"/mj/task/{task_id}/fetch", headers=self.headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def done(self, task_id: str) -> dict[str, Any]:
        self.runtime.run_pending()
        task = self.fetch(task_id)
        assert task["status"] == "SUCCESS", task
        return task

    def press(self, task: dict[str, Any], needle: str, code: int = 1) -> dict[str, Any]:
        custom_id = next(b["customId"] for b in task["buttons"] if needle in b["customId"])
        return self.submit("/mj/submit/action", {"taskId": task["id"], "customId": custom_id}, code)

    def image(self, url: str) -> np.ndarray:
        answer = self.client.get("/" + url.split("://", 1)[1].split("/", 1)[1])
        assert answer.status_code == 200, answer.text
        return np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"))

    @property
    def balance(self) -> int:
        key = self.runtime.store.get_key("KEY1")
        assert key is not None
        return key.balance

    def task_count(self) -> int:
        return len(self.runtime.store.list_tasks("KEY1", limit=1000))


@pytest.fixture
def mj(tmp_path: Path, clock: ManualClock):  # type: ignore[no-untyped-def]
    runtime = build_runtime(make_settings(tmp_path, prices=json.dumps(PRICES)), clock=clock, seed=5)
    runtime.store.create_key(ApiKey("KEY1", SECRET[:8], "test", CREDITS, 0), hash_secret(SECRET))
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        yield Mj(client, runtime)
    runtime.store.close()


def picture(kind: str, width: int = 96, height: int = 64) -> np.ndarray:
    """Plain test pictures with a clear layout: a sky over a ground, or diagonal stripes."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width, 3), np.uint8)
    if kind == "landscape":  # a dusky blue sky over a dark brown ground, the horizon low
        image[:] = (70, 90, 140)
        image[y > height * 0.7] = (60, 40, 20)
    elif kind == "stripes":
        image[((x + y) // 8) % 2 == 0] = (230, 200, 40)
        image[((x + y) // 8) % 2 == 1] = (20, 120, 60)
    else:
        rng = np.random.default_rng(len(kind))
        image[:] = rng.integers(0, 256, 3)
        image[height // 4 : height // 2, width // 4 : width // 2] = rng.integers(0, 256, 3)
    return image


def prompts_of(final_prompt: str, count: int) -> list[str]:
    """The numbered prompts in a finalPrompt, as a client reads them (trueai's proxy does the same)."""
    lines = [line for line in final_prompt.splitlines() if line[:1] and line.split(" ", 1)[0] in NUMBERS]
    assert [line.split(" ", 1)[0] for line in lines] == list(NUMBERS[:count]), final_prompt
    return [line.split(" ", 1)[1] for line in lines]


# --- describe ------------------------------------------------------------------------------------------
def test_describe_writes_four_distinct_prompts_and_its_buttons_imagine_them(mj: Mj) -> None:
    answer = mj.submit("/mj/submit/describe", {"base64": png_data_url(picture("landscape"))})
    task = mj.done(answer["result"])
    assert task["action"] == "DESCRIBE" and task["description"] == f"/describe {task['id']}.png"
    final = task["properties"]["finalPrompt"]
    assert final.count("\n\n") == 3 and final.startswith("1️⃣ ")
    prompts = prompts_of(final, 4)
    assert len(set(prompts)) == 4
    assert task["prompt"] == task["promptEn"] == final  # as midjourney-proxy fills them in
    assert "low horizon" in prompts[0], prompts  # what the picture shows, measured
    assert np.array_equal(mj.image(task["imageUrl"]), picture("landscape"))  # the image it described
    assert [b["customId"] for b in task["buttons"]] == [
        "MJ::Job::PicReader::1",
        "MJ::Job::PicReader::2",
        "MJ::Job::PicReader::3",
        "MJ::Job::PicReader::4",
        "MJ::Picread::Retry",
        "MJ::Job::PicReader::all",
    ]
    assert task["buttons"][-1]["emoji"] == "🎉" and task["buttons"][-1]["label"] == "Imagine all"
    assert mj.balance == CREDITS - 2

    # PicReader::2: a modal shows the prompt; confirming it with no prompt imagines it as shown
    picked = mj.press(task, "PicReader::2", code=21)
    assert picked["properties"]["finalPrompt"] == prompts[1]
    assert mj.fetch(picked["result"])["status"] == "MODAL"
    confirmed = mj.submit("/mj/submit/modal", {"taskId": picked["result"]})
    assert confirmed["result"] == picked["result"]
    imagined = mj.done(picked["result"])
    assert imagined["action"] == "IMAGINE" and imagined["prompt"] == prompts[1]
    assert len(imagined["imageUrls"]) == 4 and any(":upsample::1" in b["customId"] for b in imagined["buttons"])
    assert mj.balance == CREDITS - 2 - 4  # an Imagine, priced when pressed; the confirming modal costs nothing more

    # a prompt the user edited in the modal wins
    edited = mj.press(task, "PicReader::3", code=21)
    mj.submit("/mj/submit/modal", {"taskId": edited["result"], "prompt": "a lighthouse at dusk"})
    assert mj.done(edited["result"])["prompt"] == "a lighthouse at dusk"

    # Imagine all: four tasks at once, their ids joined with commas in `result`
    every = mj.press(task, "PicReader::all")
    ids = every["result"].split(",")
    assert len(ids) == 4
    mj.runtime.run_pending()
    assert [mj.fetch(i)["prompt"] for i in ids] == prompts
    assert all(mj.fetch(i)["status"] == "SUCCESS" for i in ids)

    # Retry: describe the same image again, with a new seed
    again = mj.done(mj.press(task, "Picread::Retry")["result"])
    assert again["action"] == "DESCRIBE" and again["seed"] != task["seed"]
    assert len(set(prompts_of(again["properties"]["finalPrompt"], 4))) == 4
    assert np.array_equal(mj.image(again["imageUrl"]), picture("landscape"))


def test_a_describe_button_pressed_on_another_kind_of_task_is_refused(mj: Mj) -> None:
    imagined = mj.done(mj.submit("/mj/submit/imagine", {"prompt": "a red fox"})["result"])
    answer = mj.post("/mj/submit/action", {"taskId": imagined["id"], "customId": "MJ::Job::PicReader::1"})
    assert answer.status_code == 400 and "describe" in answer.json()["description"], answer.text
    described = mj.done(mj.submit("/mj/submit/describe", {"base64": png_data_url(picture("stripes"))})["result"])
    answer = mj.post("/mj/submit/action", {"taskId": described["id"], "customId": imagined["buttons"][0]["customId"]})
    assert answer.status_code == 400, answer.text


# --- blend ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [2, 5])
def test_blend_makes_a_grid_whose_buttons_work(mj: Mj, count: int) -> None:
    kinds = ["landscape", "stripes", "a", "bb", "ccc"][:count]
    images = [png_data_url(picture(kind)) for kind in kinds]
    answer = mj.submit("/mj/submit/blend", {"base64Array": images, "dimensions": "PORTRAIT"})
    task = mj.done(answer["result"])
    assert task["action"] == "BLEND" and task["description"] == f"/blend {task['id']} {count}"
    assert len(task["imageUrls"]) == 4 and task["height"] > task["width"]  # 2:3
    assert mj.balance == CREDITS - 5
    tiles = [mj.image(url["url"]) for url in task["imageUrls"]]
    assert len({tile.tobytes() for tile in tiles}) == 4

    upscaled = mj.done(mj.press(task, ":upsample::1")["result"])
    assert np.array_equal(mj.image(upscaled["imageUrl"]), tiles[0])  # U1 picks its tile
    varied = mj.done(mj.press(task, ":variation::1")["result"])
    assert varied["action"] == "VARIATION" and len(varied["imageUrls"]) == 4
    rerolled = mj.done(mj.press(task, "reroll::0")["result"])
    assert rerolled["action"] == "REROLL" and rerolled["height"] == task["height"]
    assert not np.array_equal(mj.image(rerolled["imageUrls"][0]["url"]), tiles[0])


def test_blend_mixes_rather_than_averages(mj: Mj) -> None:
    first, second = picture("landscape", 64, 64), picture("stripes", 64, 64)
    task = mj.done(
        mj.submit("/mj/submit/blend", {"base64Array": [png_data_url(first), png_data_url(second)]})["result"]
    )
    assert task["width"] == task["height"]  # SQUARE, the default
    average = (first.astype(np.float32) + second.astype(np.float32)) / 2
    for url in task["imageUrls"]:
        tile = mj.image(url["url"]).astype(np.float32)
        resized = cv2.resize(average, (tile.shape[1], tile.shape[0]), interpolation=cv2.INTER_AREA)
        assert np.abs(tile - resized).mean() > 10  # not the two pictures laid over each other


# --- shorten -------------------------------------------------------------------------------------------
def test_shorten_weighs_the_words_and_its_buttons_imagine_the_shorter_prompts(mj: Mj) -> None:
    prompt = "a highly detailed photo of a red fox in the snow at dusk, 8k --ar 3:2"
    task = mj.done(mj.submit("/mj/submit/shorten", {"prompt": prompt})["result"])
    assert task["action"] == "SHORTEN" and task["imageUrl"] == "" and task["imageUrls"] == []
    final = task["properties"]["finalPrompt"]
    assert final.startswith("**IMPORTANT TOKENS**\n") and "**SHORTENED OPTIONS**\n1️⃣ " in final
    assert "**fox**" in final and "~~highly~~" in final  # drawn words in bold, filler struck through
    assert "fox: 1.00" in final and "8k: 0.00" in final
    options = prompts_of(final.split("**SHORTENED OPTIONS**")[1], 5)
    assert len(set(options)) == 5 and all(len(o) < len(prompt) for o in options)
    assert options[0] == "red fox snow dusk"
    assert [b["customId"] for b in task["buttons"]] == [f"MJ::Job::PromptAnalyzer::{i}" for i in range(1, 6)]
    assert mj.balance == CREDITS - 1

    picked = mj.press(task, "PromptAnalyzer::2", code=21)
    assert picked["properties"]["finalPrompt"].startswith(options[1])
    mj.submit("/mj/submit/modal", {"taskId": picked["result"]})
    imagined = mj.done(picked["result"])
    assert imagined["prompt"] == options[1] and imagined["width"] > imagined["height"]  # keeps the --ar 3:2


def test_the_cli_shows_a_describes_prompts(mj: Mj) -> None:
    from journeyd.task_views import detail

    task = mj.done(mj.submit("/mj/submit/describe", {"base64": png_data_url(picture("landscape"))})["result"])
    found = mj.runtime.store.get_tasks(numbers=[int(task["id"])])[0]
    shown = detail(found, "http://x/images")
    assert re.findall(r"^prompt (\d) ", shown, re.MULTILINE) == ["1", "2", "3", "4"]
    assert "low horizon" in shown


# --- bad input -----------------------------------------------------------------------------------------
BAD = [
    pytest.param(  # refused at submit, where the engine's rules say what it can shorten
        "/mj/submit/shorten",
        {"prompt": "a beautiful cat"},
        400,
        "too few for 5 shorter prompts",
        id="shorten too short",
    ),
    pytest.param("/mj/submit/blend", {"base64Array": ["ONE"]}, 400, "2 to 5 images", id="blend of 1"),
    pytest.param("/mj/submit/blend", {"base64Array": ["X"] * 6}, 400, "2 to 5 images", id="blend of 6"),
    pytest.param(
        "/mj/submit/blend", {"base64Array": ["A", "B"], "dimensions": "WIDE"}, 400, "dimensions", id="bad dim"
    ),
    pytest.param("/mj/submit/describe", {"base64": "bm90IGFuIGltYWdl"}, 422, "base64", id="describe a non-image"),
    pytest.param(
        "/mj/submit/describe",
        {"link": "http://169.254.169.254/latest"},
        422,
        "link resolves to 169.254.169.254",
        id="hostile link",
    ),
    pytest.param("/mj/submit/describe", {}, 400, "image to describe", id="describe nothing"),
    pytest.param("/mj/submit/shorten", {"prompt": "fox " * 600}, 400, "limit is 2000", id="over-long shorten"),
    pytest.param("/mj/submit/shorten", {"prompt": "--ar 3:2"}, 400, "no words", id="shorten only flags"),
    pytest.param(
        "/mj/submit/imagine", {"prompt": "a fox --sref https://example.com/s.png"}, 400, "IP-Adapter", id="sref"
    ),
    pytest.param(
        "/mj/submit/imagine", {"prompt": "a fox --cref https://example.com/c.png"}, 400, "IP-Adapter", id="cref"
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "needle"), BAD)
def test_bad_actions_get_a_specific_4xx_with_no_charge_and_no_task(
    mj: Mj, path: str, body: dict[str, Any], status: int, needle: str
) -> None:
    if path.endswith("blend") and body["base64Array"][0] != "ONE" and len(body["base64Array"]) == 2:
        body = {**body, "base64Array": [png_data_url(picture("a")), png_data_url(picture("bb"))]}
    answer = mj.post(path, body)
    assert answer.status_code == status, answer.text
    assert needle.lower() in answer.json()["description"].lower(), answer.text
    assert answer.json()["code"] == 4
    assert mj.balance == CREDITS and mj.task_count() == 0
    assert not list((mj.runtime.settings.data_dir / "images").rglob("*.png"))


def test_a_failed_describe_is_refunded(mj: Mj, monkeypatch: pytest.MonkeyPatch) -> None:
    from journeyd.engines.classic import ClassicEngine

    def broken(self, image, seed, progress):  # type: ignore[no-untyped-def]
        raise RuntimeError("the lens fell off")

    monkeypatch.setattr(ClassicEngine, "describe", broken)
    answer = mj.submit("/mj/submit/describe", {"base64": png_data_url(picture("stripes"))})
    assert mj.balance == CREDITS - 2
    mj.runtime.run_pending()
    task = mj.fetch(answer["result"])
    assert task["status"] == "FAILURE" and "lens fell off" in task["failReason"]
    assert mj.balance == CREDITS


# --- references, idempotency, webhooks -------------------------------------------------------------------
class Pictures:
    """A fetcher serving fixed pictures by URL (the real one refuses the test's private addresses)."""

    def __init__(self, pictures: dict[str, np.ndarray]) -> None:
        self.pictures = pictures

    def fetch(self, source: str, *, what: str = "image") -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(self.pictures[source]).save(buffer, "PNG")
        return buffer.getvalue()

    def check_url(self, url: str, *, what: str) -> None:
        pass


def test_style_and_character_references_reach_an_engine_that_takes_them(
    mj: Mj, monkeypatch: pytest.MonkeyPatch
) -> None:
    from journeyd.engines.classic import ClassicEngine

    style, face = "https://refs.test/style.png", "https://refs.test/face.png"
    mj.runtime.service.fetcher = Pictures({style: picture("stripes"), face: picture("landscape")})  # type: ignore[assignment]
    mj.runtime.service.rules = ACCEPT_EVERYTHING  # as an engine with an IP-Adapter accepts them
    seen: dict[str, Any] = {}
    drawn = ClassicEngine.generate

    def generate(self, prompt, size, seeds, progress, init_images=(), **references):  # type: ignore[no-untyped-def]
        seen.update(references, prompt=prompt)
        return drawn(self, prompt, size, seeds, progress, init_images)

    monkeypatch.setattr(ClassicEngine, "generate", generate)
    answer = mj.submit("/mj/submit/imagine", {"prompt": f"a fox --sref {style} --sw 250 --cref {face} --cw 40"})
    task = mj.done(answer["result"])
    assert np.array_equal(seen["style_refs"][0], picture("stripes"))
    assert np.array_equal(seen["character_refs"][0], picture("landscape"))
    assert seen["prompt"].style_weight == 250 and seen["prompt"].character_weight == 40
    assert task["promptEn"] == f"a fox --sref {style} --sw 250 --cref {face} --cw 40"
    keys = sorted(p.name for p in (mj.runtime.settings.images_dir).rglob("input-*.png"))
    assert keys == ["input-cref-0.png", "input-sref-0.png"]


def test_a_retried_imagine_all_gets_the_same_four_tasks(mj: Mj) -> None:
    described = mj.done(mj.submit("/mj/submit/describe", {"base64": png_data_url(picture("landscape"))})["result"])
    body = {"taskId": described["id"], "customId": "MJ::Job::PicReader::all"}
    headers = {**mj.headers, "Idempotency-Key": "all-1"}
    first = mj.client.post("/mj/submit/action", json=body, headers=headers).json()
    again = mj.client.post("/mj/submit/action", json=body, headers=headers).json()
    assert first["code"] == again["code"] == 1 and first["result"] == again["result"]
    assert len(first["result"].split(",")) == 4 and mj.task_count() == 1 + 4
    assert mj.balance == CREDITS - 2 - 4 * 4


def test_a_describe_is_posted_to_its_notify_hook_with_its_prompts(mj: Mj) -> None:
    from journeyd.media.fetch import Posted

    posted: list[dict[str, Any]] = []

    class Receiver:
        def post(self, url: str, body: bytes, headers: dict[str, str], *, what: str) -> Posted:
            posted.append(json.loads(body))
            return Posted(200)

    mj.runtime.notifier.poster = Receiver()
    mj.runtime.service.hooks = Pictures({})  # type: ignore[assignment]  # any hook URL is fine here
    body = {"base64": png_data_url(picture("stripes")), "notifyHook": "https://hooks.test/mj"}
    mj.done(mj.submit("/mj/submit/describe", body)["result"])
    for _ in range(5):
        mj.runtime.notifier.run_once()
        mj.runtime.clock.advance(10)  # type: ignore[attr-defined]
    final = [p for p in posted if p["status"] == "SUCCESS"]
    assert final and final[-1]["action"] == "DESCRIBE" and final[-1]["properties"]["finalPrompt"].startswith("1️⃣ ")
