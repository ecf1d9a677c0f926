"""The studio in a real browser, driven as a person drives it: real clicks, real mouse drags on the
canvas, against a real `journeyd serve` on a real port. Screenshots of the main screens go to
`test-screenshots/` (JOURNEYD_SCREENSHOTS), to be looked at."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Locator, Page, expect

from tests.browser import chromium, screenshot, studio_page
from tests.conftest import png_data_url
from tests.servers import Server, journeyd

TIMEOUT_MS = 60_000  # a classic-engine task on a busy 2-core CI machine


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("studio") / "data", args=("--engine", "classic")).start()
    yield server
    server.stop()


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    with studio_page(browser, server.url) as page:
        expect(page.locator("body[data-ready=true]")).to_be_attached()
        yield page


def card(page: Page, action: str, status: str = "Done", text: str = "") -> Locator:
    """The newest history card of `action` in `status` (cards are newest first)."""
    return page.locator("li.task").filter(has_text=re.compile(rf"{action} · {status}")).filter(has_text=text).first


def imagine(page: Page, prompt: str) -> Locator:
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_role("button", name="Imagine", exact=True).click()
    done = card(page, "IMAGINE", text=prompt)
    expect(done).to_be_visible(timeout=TIMEOUT_MS)
    return done


def upscaled(page: Page, prompt: str) -> Locator:
    imagine(page, prompt).get_by_role("button", name="U1", exact=True).click()
    result = card(page, "UPSCALE", text=prompt)
    expect(result.get_by_role("button", name="Vary (Region)")).to_be_visible(timeout=TIMEOUT_MS)
    return result


def canvas_to_native(box: dict[str, float], size: tuple[int, int], x: float, y: float) -> tuple[float, float]:
    """Where a point on the fitted canvas lands on the image, at the image's native size."""
    return (x - box["x"]) * size[0] / box["width"], (y - box["y"]) * size[1] / box["height"]


def drag(page: Page, points: list[tuple[float, float]]) -> None:
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*point, steps=8)
    page.mouse.up()


def decode_mask(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"))


def within(got: np.ndarray, expected: np.ndarray, px: int) -> bool:
    """`got` covers `expected` up to `px` pixels at every edge, in both directions."""
    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    inner = cv2.erode(expected.astype(np.uint8), kernel).astype(bool)
    outer = cv2.dilate(expected.astype(np.uint8), kernel).astype(bool)
    return bool(np.all(got[inner]) and not np.any(got[~outer]))


def open_editor(result: Locator, page: Page) -> tuple[dict[str, float], tuple[int, int]]:
    url = result.locator("img").get_attribute("src")
    assert url
    native = Image.open(io.BytesIO(httpx.get(url if url.startswith("http") else page.url.rstrip("/") + url).content))
    result.get_by_role("button", name="Vary (Region)").click()
    canvas = page.get_by_role("img", name=re.compile("Image and selection"))
    expect(canvas).to_be_visible()
    box = canvas.bounding_box()
    assert box
    return box, native.size


def test_imagine_u1_vary_region_with_rectangle_and_lasso_then_the_candidate_board(page: Page) -> None:
    result = upscaled(page, "a lighthouse on a cliff at dusk --seed 11")
    screenshot(page, "1-history")
    box, size = open_editor(result, page)
    region = page.get_by_label("Region prompt")
    expect(region).to_have_value("a lighthouse on a cliff at dusk --seed 11")  # the parent's prompt

    left, top, w, h = box["x"], box["y"], box["width"], box["height"]
    rect = [(left + 0.15 * w, top + 0.12 * h), (left + 0.45 * w, top + 0.40 * h)]
    page.get_by_role("button", name="Rectangle").click()
    drag(page, rect)
    lasso = [(left + 0.55 * w, top + 0.55 * h), (left + 0.85 * w, top + 0.60 * h), (left + 0.70 * w, top + 0.90 * h)]
    page.get_by_role("button", name="Lasso").click()
    drag(page, [*lasso, lasso[0]])
    page.get_by_role("button", name="Brush", exact=True).click()
    drag(page, [(left + 0.1 * w, top + 0.8 * h), (left + 0.3 * w, top + 0.85 * h)])
    page.keyboard.press("Control+z")  # undo the brush stroke: only the rectangle and the lasso stay
    expect(page.get_by_role("button", name="Redo")).to_be_enabled()
    region.fill("a glowing golden sun")
    screenshot(page, "2-editor")

    with page.expect_request("**/mj/submit/modal") as posted:
        page.get_by_role("button", name="Submit").click()
    body: dict[str, Any] = posted.value.post_data_json
    assert body["prompt"] == "a glowing golden sun"
    mask = decode_mask(body["maskBase64"])
    assert (mask.shape[1], mask.shape[0]) == size  # the image's native size
    assert set(np.unique(mask)) <= {0, 255}
    expected = np.zeros(mask.shape, np.uint8)
    (x0, y0), (x1, y1) = (canvas_to_native(box, size, *p) for p in rect)
    expected[round(y0) : round(y1), round(x0) : round(x1)] = 1
    polygon = np.array([canvas_to_native(box, size, *p) for p in lasso], np.float64)
    cv2.fillPoly(expected, [np.round(polygon).astype(np.int32)], 1)
    assert within(mask == 255, expected.astype(bool), px=2)

    board = page.get_by_role("dialog", name="Candidate board")
    expect(board).to_be_visible(timeout=TIMEOUT_MS)
    candidates = board.get_by_role("button", name=re.compile(r"^Candidate \d$"))
    expect(candidates).to_have_count(4)
    expect(board.locator("canvas.outline")).to_have_count(4)  # the mask's outline on each
    expect(board.get_by_label("Fidelity")).to_have_text("Beyond the feather: 0 px differ from the parent")
    page.keyboard.press("3")
    expect(board.get_by_role("button", name="Candidate 3", exact=True)).to_have_attribute("aria-pressed", "true")
    expect(board.get_by_role("button", name="Upscale candidate 3")).to_be_visible()
    for candidate in candidates.all():
        assert candidate.locator("img").evaluate("image => image.complete && image.naturalWidth > 0")
    screenshot(page, "3-candidate-board")


def test_brush_eraser_invert_clear_and_the_minimum_area(page: Page) -> None:
    result = upscaled(page, "a red fox in the snow --seed 5")
    box, size = open_editor(result, page)
    left, top, w, h = box["x"], box["y"], box["width"], box["height"]
    submit = page.get_by_role("button", name="Submit")
    status = page.locator("#editor-status")

    page.get_by_role("button", name="Rectangle").click()
    drag(page, [(left + 0.5 * w, top + 0.5 * h), (left + 0.5 * w + 12, top + 0.5 * h + 12)])
    expect(status).to_contain_text("minimum")
    submits: list[str] = []
    page.on("request", lambda request: submits.append(request.url) if "/submit/" in request.url else None)
    submit.click()
    expect(status).to_contain_text("Too small to submit")  # the click was handled, and refused here
    expect(page.get_by_role("dialog", name="Vary (Region) editor")).to_be_visible()
    assert submits == []

    page.get_by_role("button", name="Clear").click()
    page.get_by_role("button", name="Brush", exact=True).click()
    page.get_by_label("Brush size").fill("80")
    stroke = [(left + 0.2 * w, top + 0.5 * h), (left + 0.8 * w, top + 0.5 * h)]
    drag(page, stroke)
    page.get_by_role("button", name="Eraser").click()
    drag(page, [(left + 0.45 * w, top + 0.3 * h), (left + 0.45 * w, top + 0.7 * h)])
    page.get_by_role("button", name="Invert").click()
    page.get_by_role("button", name="Undo").click()  # back to brush minus eraser
    page.get_by_role("button", name="Redo").click()  # and inverted again
    with page.expect_request("**/mj/submit/modal") as posted:
        submit.click()
    mask = decode_mask(posted.value.post_data_json["maskBase64"]) == 255
    sx0, sy = canvas_to_native(box, size, *stroke[0])
    ex, _ = canvas_to_native(box, size, left + 0.45 * w, top)
    y = int(sy)
    assert not mask[y, int(sx0 + 40)], "the brushed line is kept (inverted)"
    assert mask[y, int(ex)], "the erased cut is repainted (inverted)"
    assert mask[5, 5] and mask[-5, -5], "everything away from the stroke is repainted (inverted)"
    expect(page.get_by_role("dialog", name="Candidate board")).to_be_visible(timeout=TIMEOUT_MS)


def test_an_uploaded_mask_is_sent_at_native_size(page: Page, tmp_path: Path) -> None:
    result = upscaled(page, "a castle on a hill --seed 8")
    _, size = open_editor(result, page)
    uploaded = np.zeros((size[1] // 2, size[0] // 2, 4), np.uint8)  # half size, with transparency
    uploaded[: size[1] // 4, :, :] = 255  # top half white: repaint the sky
    path = tmp_path / "mask.png"
    Image.fromarray(uploaded, "RGBA").save(path)
    page.get_by_label("Upload mask").set_input_files(str(path))
    expect(page.locator("#editor-status")).to_contain_text("50.0%")
    with page.expect_request("**/mj/submit/modal") as posted:
        page.get_by_role("button", name="Submit").click()
    mask = decode_mask(posted.value.post_data_json["maskBase64"])
    assert (mask.shape[1], mask.shape[0]) == size
    expected = np.zeros(mask.shape, bool)
    expected[: size[1] // 2] = True
    assert within(mask == 255, expected, px=2)


def test_live_progress_shows_step_previews_and_a_cancel_shows_its_reason(browser: Browser, tmp_path: Path) -> None:
    slow = Server(tmp_path / "data", args=("--engine", "classic"), env={"JOURNEYD_CLASSIC_STEP_S": "0.25"}).start()
    try:
        with studio_page(browser, slow.url) as page:
            expect(page.locator("body[data-ready=true]")).to_be_attached()  # the first load's stream is open
            streams: list[str] = []
            page.on("request", lambda r: streams.append(r.url) if "/mj/task/events" in r.url else None)
            page.reload()  # counted from here: one page load
            expect(page.get_by_label("Live updates")).to_have_text("● live")
            page.get_by_label("Prompt", exact=True).fill("a harbour at night --seed 3")
            page.keyboard.press("Enter")  # the keyboard submits too
            running = card(page, "IMAGINE", "Running")
            expect(running.get_by_role("progressbar")).to_be_visible(timeout=TIMEOUT_MS)
            expect(running.get_by_role("img", name=re.compile("^Preview of"))).to_be_visible(timeout=TIMEOUT_MS)
            screenshot(page, "4-progress")
            expect(card(page, "IMAGINE", text="harbour").get_by_role("button", name="U1", exact=True)).to_be_visible(
                timeout=TIMEOUT_MS
            )

            page.get_by_label("Prompt", exact=True).fill("a storm at sea --seed 9")
            page.keyboard.press("Enter")
            card(page, "IMAGINE", "(Queued|Running)", text="storm").get_by_role("button", name="Cancel task").click()
            cancelled = card(page, "IMAGINE", "Cancelled", text="storm")
            expect(cancelled).to_be_visible(timeout=TIMEOUT_MS)
            expect(cancelled.locator(".fail")).not_to_be_empty()  # the reason, as the server gave it
            expect(cancelled.get_by_role("button")).to_have_count(0)
            assert len(streams) == 1  # one stream for the whole page, every task on it
    finally:
        slow.stop()


def test_zoom_and_pan_keep_the_selection_where_the_pointer_was(page: Page) -> None:
    result = upscaled(page, "a barn in the rain --seed 6")
    box, size = open_editor(result, page)
    canvas = page.get_by_role("img", name=re.compile("Image and selection"))
    page.get_by_role("button", name="Zoom in").click()
    page.get_by_role("button", name="Zoom in").click()  # 1.5 x 1.5 about the centre
    canvas.focus()
    page.keyboard.press("ArrowLeft")  # pans the image 40 canvas pixels to the right
    page.keyboard.press("]")  # a bigger brush, from the keyboard
    expect(page.locator("#brush-size-value")).to_have_text("60")
    scale = box["width"] / size[0] * 2.25
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    def native(x: float, y: float) -> tuple[float, float]:
        return size[0] / 2 + (x - cx - 40) / scale, size[1] / 2 + (y - cy) / scale

    rect = [(cx - 150, cy - 120), (cx + 120, cy + 130)]  # 120 x 111 native px: above the minimum
    page.get_by_role("button", name="Rectangle").click()
    drag(page, rect)
    with page.expect_request("**/mj/submit/modal") as posted:
        page.get_by_role("button", name="Submit").click()
    mask = decode_mask(posted.value.post_data_json["maskBase64"]) == 255
    (x0, y0), (x1, y1) = native(*rect[0]), native(*rect[1])
    expected = np.zeros(mask.shape, bool)
    expected[round(y0) : round(y1), round(x0) : round(x1)] = True
    assert within(mask, expected, px=2)


def test_history_pages_by_fifty(browser: Browser, tmp_path: Path) -> None:
    data = tmp_path / "data"
    idle = Server(  # no workers: the tasks stay queued, and nothing caps how many
        data, args=("--engine", "classic", "--workers", "0"), env={"JOURNEYD_MAX_QUEUED_PER_KEY": "0"}
    ).start()
    try:
        for n in range(57):
            answer = httpx.post(f"{idle.url}/mj/submit/imagine", json={"prompt": f"task number {n}"}).json()
            assert answer["code"] in (1, 22), answer
        with studio_page(browser, idle.url) as page:
            listed: list[str] = []
            page.on("request", lambda r: listed.append(r.url) if "/mj/task/list" in r.url else None)
            page.reload()
            expect(page.locator("li.task")).to_have_count(50)
            expect(page.locator("li.task").first).to_contain_text("task number 56")  # newest first
            page.get_by_role("button", name="Load older tasks").click()
            expect(page.locator("li.task")).to_have_count(57)
            expect(page.locator("li.task").last).to_contain_text("task number 0")
            expect(page.get_by_role("button", name="Load older tasks")).to_be_hidden()
            assert listed and all("limit=50" in url for url in listed)
    finally:
        idle.stop()


def test_a_pasted_key_is_kept_and_its_credits_shown(browser: Browser, tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret = journeyd("keys", "create", "--credits", "40", "--name", "alice", "--data-dir", str(data)).stdout.strip()
    keyed = Server(data, args=("--engine", "classic"), env={"JOURNEYD_PRICES": '{"midjourney@imagine": 3}'}).start()
    try:
        context = browser.new_context()
        page = context.new_page()
        page.goto(keyed.url + "/")
        expect(page.locator("#notice")).to_contain_text("API key")
        page.get_by_role("textbox", name="API key").fill(secret)
        page.get_by_role("button", name="Save key").click()
        expect(page.get_by_label("Credits")).to_have_text("alice: 40 credits")
        page.reload()  # kept in the browser
        expect(page.get_by_label("Credits")).to_have_text("alice: 40 credits")
        page.get_by_label("Prompt", exact=True).fill("a quiet lake --seed 2")
        page.get_by_role("button", name="Imagine", exact=True).click()
        expect(card(page, "IMAGINE", ".*")).to_be_visible()
        expect(page.get_by_label("Credits")).to_have_text("alice: 37 credits")  # charged for the imagine
        context.close()
    finally:
        keyed.stop()


BUTTONS = ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "Reroll"]
UPSCALED_BUTTONS = [
    "Upscale (Subtle)",
    "Upscale (Creative)",
    "Vary (Subtle)",
    "Vary (Strong)",
    "Vary (Region)",
    "Zoom Out 2x",
    "Zoom Out 1.5x",
    "Custom Zoom",
    "Pan Left",
    "Pan Right",
    "Pan Up",
    "Pan Down",
]


def test_every_control_has_an_accessible_name_and_the_buttons_their_labels(page: Page) -> None:
    result = upscaled(page, "a windmill in a field --seed 4")
    grid = card(page, "IMAGINE", text="a windmill")
    for name in BUTTONS:
        expect(grid.get_by_role("button", name=name, exact=True)).to_have_count(1)
    for name in UPSCALED_BUTTONS:
        expect(result.get_by_role("button", name=name, exact=True)).to_have_count(1)
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('button, input, select, textarea, canvas[tabindex]')]
            .filter(el => el.offsetParent !== null || el.closest('dialog[open]'))
            .filter(el => !(el.getAttribute('aria-label') || el.labels?.length || el.textContent.trim()))
            .map(el => el.outerHTML.slice(0, 80))"""
    )
    assert unnamed == []

    result.get_by_role("button", name="Custom Zoom", exact=True).click()
    page.get_by_label("Zoom factor (1 to 2)").fill("1.25")
    with page.expect_request("**/mj/submit/modal") as posted:
        page.get_by_role("button", name="Zoom out", exact=True).click()
    assert posted.value.post_data_json["prompt"].endswith("--zoom 1.25")
    expect(card(page, "ZOOM")).to_be_visible(timeout=TIMEOUT_MS)


@pytest.mark.parametrize(("path", "rendered"), [("/docs", ".opblock"), ("/redoc", "[data-section-id]")])
def test_docs_render_with_no_other_host_reachable(browser: Browser, server: Server, path: str, rendered: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    foreign: list[str] = []

    def offline(route: Any) -> None:  # as on a machine with no internet: every other host fails
        if route.request.url.startswith(server.url) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    context.route("**/*", offline)
    page = context.new_page()
    page.goto(server.url + path)
    expect(page.locator(rendered).first).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("journeyd").first).to_be_visible()
    screenshot(page, f"5-{path.strip('/')}")
    context.close()
    assert foreign == []


def test_a_describes_prompt_is_imagined_with_one_press(page: Page, server: Server) -> None:
    described = httpx.post(
        f"{server.url}/mj/submit/describe", json={"base64": png_data_url(np.full((96, 96, 3), (40, 90, 200), np.uint8))}
    ).json()
    assert described["code"] == 1, described
    page.reload()
    describe = card(page, "DESCRIBE")
    expect(describe).to_be_visible(timeout=TIMEOUT_MS)
    task = httpx.get(f"{server.url}/mj/task/{described['result']}/fetch").json()
    first = task["properties"]["finalPrompt"].split("\n\n")[0].removeprefix("1️⃣").strip()
    describe.get_by_role("button", name="Imagine prompt 1").click()  # a modal in Midjourney: kept as picked
    expect(card(page, "IMAGINE", text=first.split(" --")[0])).to_be_visible(timeout=TIMEOUT_MS)


def test_describe_blend_and_shorten_from_the_page(page: Page, tmp_path: Path) -> None:
    files = []
    for n, colour in enumerate(((200, 120, 40), (40, 90, 200), (30, 160, 60))):
        path = tmp_path / f"picture-{n}.png"
        pixels = np.zeros((96, 128, 3), np.uint8)
        pixels[:48], pixels[48:] = colour, (20, 20, 30)
        Image.fromarray(pixels).save(path)
        files.append(str(path))
    page.get_by_label("Describe an image").set_input_files(files[0])
    expect(card(page, "DESCRIBE").get_by_role("button", name="Imagine prompt 4")).to_be_visible(timeout=TIMEOUT_MS)

    page.get_by_label("Blend shape").select_option("LANDSCAPE")
    page.get_by_label("Blend 2 to 5 images").set_input_files(files)
    expect(card(page, "BLEND").get_by_role("button", name="U1", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    page.get_by_label("Blend 2 to 5 images").set_input_files(files[0])  # one is not a blend: said, nothing sent
    expect(page.locator("#notice")).to_have_text("Choose 2 to 5 images.")

    page.get_by_label("Prompt", exact=True).fill("a red fox in the snow, misty pine forest at dawn, golden light")
    page.get_by_role("button", name="Shorten").click()
    shortened = card(page, "SHORTEN")
    expect(shortened.get_by_role("button", name="Imagine prompt 5")).to_be_visible(timeout=TIMEOUT_MS)
    shortened.get_by_role("button", name="Imagine prompt 1").click()
    expect(card(page, "IMAGINE", text="fox")).to_be_visible(timeout=TIMEOUT_MS)
    screenshot(page, "6-actions")
