"""Contract tests: exactly what new-api, chatgpt-web-midjourney-proxy and ChatGPT-Midjourney send
(paths, headers, bodies), decoded with the types those clients require.

Sources (see ../shared/reference/midjourney-apis.md §5): new-api `dto/midjourney.go`,
`relay/mjproxy_handler.go`, `controller/midjourney.go`; Dooy `src/api/mjapi.ts`;
Licoy `app/api/mj/[...path]/route.ts`, `app/store/mj.ts`.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from journeyd.clock import ManualClock
from journeyd.domain.keys import ApiKey, hash_secret
from journeyd.runtime import build_runtime
from tests.conftest import LOOPBACK, TestClient, box_mask, create_app, make_settings, png_data_url

KEY = "jd_channel_key_for_the_relay"


# --- the clients' types ------------------------------------------------------------------------------
class Go(BaseModel):
    """Go's encoding/json: null is fine for any field, a wrong type fails the whole decode."""

    model_config = ConfigDict(strict=True, extra="ignore")


class MidjourneyResponse(Go):  # new-api dto.MidjourneyResponse
    code: StrictInt
    description: StrictStr | None = None
    properties: Any = None
    result: StrictStr | None = None


class ImgUrls(Go):
    url: StrictStr | None = None


class Properties(Go):
    finalPrompt: StrictStr | None = None
    finalZhPrompt: StrictStr | None = None


class MidjourneyDto(Go):  # new-api dto.MidjourneyDto
    id: StrictStr
    action: StrictStr | None = None
    customId: StrictStr | None = None
    botType: StrictStr | None = None
    prompt: StrictStr | None = None
    promptEn: StrictStr | None = None
    description: StrictStr | None = None
    state: StrictStr | None = None
    submitTime: StrictInt | None = None
    startTime: StrictInt | None = None
    finishTime: StrictInt | None = None
    imageUrl: StrictStr | None = None
    videoUrl: StrictStr | None = None
    videoUrls: list[ImgUrls] | None = None
    status: StrictStr | None = None
    progress: StrictStr | None = None
    failReason: StrictStr | None = None
    buttons: Any = None
    maskBase64: StrictStr | None = None
    properties: Properties | None = None


class Button(Go):  # what chatgpt-web and ChatGPT-Midjourney index into
    customId: StrictStr
    emoji: StrictStr
    label: StrictStr
    type: StrictInt
    style: StrictInt


# --- fixtures ------------------------------------------------------------------------------------------
@pytest.fixture
def relay(tmp_path: Path, clock: ManualClock):  # type: ignore[no-untyped-def]
    runtime = build_runtime(
        make_settings(tmp_path, banned_words="gore, beheading", max_queued_per_key=20), clock=clock, seed=11
    )
    runtime.store.create_key(ApiKey("RELAY", KEY[:8], "new-api channel", 0, 0), hash_secret(KEY))
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        yield client, runtime
    runtime.store.close()


def new_api_submit(client: TestClient, path: str, body: dict[str, Any]) -> MidjourneyResponse:
    """As relay/mjproxy_handler.go forwards a submit: the client's body minus notifyHook and
    accountFilter, `mj-api-secret` with the channel key, Content-Type from the client."""
    body = {k: v for k, v in body.items() if k not in ("notifyHook", "accountFilter")}
    answer = client.post(
        path, content=json.dumps(body), headers={"mj-api-secret": KEY, "Content-Type": "application/json"}
    )
    decoded = MidjourneyResponse.model_validate_json(answer.content)
    accepted = decoded.code in (1, 21, 22)
    assert (answer.status_code == 200) == accepted, answer.text  # new-api bills only on HTTP 200 and 1/21/22
    assert isinstance(decoded.properties, dict)
    return decoded


def new_api_poll(client: TestClient, ids: list[str]) -> dict[str, MidjourneyDto]:
    """As controller/midjourney.go polls: every unfinished id of the channel in one POST."""
    answer = client.post(
        "/mj/task/list-by-condition",
        content=json.dumps({"ids": ids}),
        headers={"Content-Type": "application/json", "mj-api-secret": KEY},
    )
    assert answer.status_code == 200
    tasks = [MidjourneyDto.model_validate(item) for item in json.loads(answer.content)]
    assert {t.id for t in tasks} <= set(ids)  # new-api dereferences taskM[id] without a nil check
    return {t.id: t for t in tasks}


def finished(task: MidjourneyDto) -> bool:
    """new-api's only test of a finished task."""
    return task.progress == "100%" or bool(task.failReason)


# --- new-api ---------------------------------------------------------------------------------------------
def test_new_api_imagine_upscale_and_region(relay) -> None:  # type: ignore[no-untyped-def]
    client, runtime = relay
    imagine = new_api_submit(
        client,
        "/mj/submit/imagine",
        {
            "prompt": "a koi pond --ar 4:3",
            "base64Array": [],
            "botType": "MID_JOURNEY",
            "state": "order-7",
            "notifyHook": "https://relay.example/mj/notify",
            "accountFilter": {"modes": ["FAST"]},
        },
    )
    assert imagine.code == 1 and imagine.result and imagine.result.isdigit() and len(imagine.result) == 16
    grid_id = imagine.result
    polled = new_api_poll(client, [grid_id, "1700000000000123"])
    assert polled[grid_id].status == "SUBMITTED" and not finished(polled[grid_id])
    runtime.run_pending()
    grid = new_api_poll(client, [grid_id])[grid_id]
    assert grid.status == "SUCCESS" and finished(grid) and grid.state == "order-7"
    assert grid.imageUrl and grid.properties and grid.properties.finalPrompt == "a koi pond --ar 4:3"

    buttons = [Button.model_validate(b) for b in grid.buttons]
    u1 = next(b.customId for b in buttons if b.label == "U1")
    split = u1.split("::")  # service/midjourney.go CoverPlusActionToNormalAction
    assert (split[2] if split[1] == "JOB" else split[1]) == "upsample" and split[3] == "1"
    upscale = new_api_submit(client, "/mj/submit/action", {"customId": u1, "taskId": grid_id})
    runtime.run_pending()
    upscaled = new_api_poll(client, [upscale.result])[upscale.result]  # type: ignore[index, list-item]
    assert upscaled.action == "UPSCALE" and finished(upscaled)

    region_id = next(b["customId"] for b in upscaled.buttons if b["customId"].startswith("MJ::Inpaint::1"))
    answer = client.post(
        "/mj/submit/action", json={"customId": region_id, "taskId": upscaled.id}, headers={"mj-api-secret": KEY}
    )
    assert b'"code":21' in answer.content  # compact: new-api matches this text (and keeps 21 for INPAINT)
    region = MidjourneyResponse.model_validate_json(answer.content)
    waiting = new_api_poll(client, [region.result])[region.result]  # type: ignore[index, list-item]
    assert waiting.status == "MODAL" and waiting.action == "INPAINT" and not finished(waiting)

    mask = box_mask(512, 512, (0, 0, 200, 200))  # any size: resized to the parent
    modal = new_api_submit(
        client,
        "/mj/submit/modal",
        {"taskId": region.result, "prompt": "a lotus flower", "maskBase64": png_data_url(mask)},
    )
    assert modal.code == 1 and modal.result == region.result  # the same task moves on
    runtime.run_pending()
    done = new_api_poll(client, [region.result])[region.result]  # type: ignore[index, list-item]
    assert done.status == "SUCCESS" and done.progress == "100%" and done.prompt == "a lotus flower"


def _pictures(count: int) -> list[str]:
    """Distinct small PNG data URLs, as a client uploads them."""
    rng = np.random.default_rng(count)
    return [png_data_url(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(count)]


def test_new_api_blend_and_describe(relay) -> None:  # type: ignore[no-untyped-def]
    """new-api relays /mj/submit/blend and /describe bodies as its users send them (controller relay-mj)."""
    client, runtime = relay
    blend = new_api_submit(
        client,
        "/mj/submit/blend",
        {"botType": "MID_JOURNEY", "base64Array": _pictures(3), "dimensions": "LANDSCAPE", "state": "b-1"},
    )
    describe = new_api_submit(client, "/mj/submit/describe", {"botType": "MID_JOURNEY", "base64": _pictures(1)[0]})
    assert blend.code == 1 and describe.code == 22  # queued behind the blend
    assert not any(finished(t) for t in new_api_poll(client, [blend.result, describe.result]).values())  # type: ignore[list-item]
    runtime.run_pending()
    polled = new_api_poll(client, [blend.result, describe.result])  # type: ignore[list-item]
    blended, described = polled[blend.result], polled[describe.result]  # type: ignore[index]
    assert blended.action == "BLEND" and finished(blended) and blended.state == "b-1" and blended.imageUrl
    assert described.action == "DESCRIBE" and finished(described) and described.imageUrl
    assert described.properties and (described.properties.finalPrompt or "").startswith("1️⃣ ")
    assert described.promptEn == described.properties.finalPrompt

    u1 = next(b["customId"] for b in blended.buttons if b["label"] == "U1")  # U1 on a blend, as new-api presses it
    upscale = new_api_submit(client, "/mj/submit/action", {"customId": u1, "taskId": blended.id})
    runtime.run_pending()
    assert new_api_poll(client, [upscale.result])[upscale.result].status == "SUCCESS"  # type: ignore[index, list-item]


def test_new_api_change_simple_change_and_seed(relay) -> None:  # type: ignore[no-untyped-def]
    client, runtime = relay
    grid_id = new_api_submit(client, "/mj/submit/imagine", {"prompt": "an owl"}).result
    runtime.run_pending()
    for body in (
        {"taskId": grid_id, "action": "UPSCALE", "index": 2},
        {"taskId": grid_id, "action": "VARIATION", "index": 3},
        {"taskId": grid_id, "action": "REROLL", "index": 1},
    ):
        assert new_api_submit(client, "/mj/submit/change", body).code in (1, 22)
    for content in (f"{grid_id} U4", f"{grid_id} v1", f"{grid_id} R"):
        assert new_api_submit(client, "/mj/submit/simple-change", {"content": content}).code in (1, 22)
    runtime.run_pending()
    seed = client.get(f"/mj/task/{grid_id}/image-seed", headers={"mj-api-secret": KEY})
    decoded = MidjourneyResponse.model_validate_json(seed.content)
    assert decoded.code == 1 and decoded.result and decoded.result.isdigit()
    assert new_api_submit(client, "/mj/submit/simple-change", {"content": f"{grid_id} U9"}).code == 4


def test_speed_prefixes_and_queue_codes(relay) -> None:  # type: ignore[no-untyped-def]
    client, runtime = relay
    first = new_api_submit(client, "/mj-relax/mj/submit/imagine", {"prompt": "relaxed"})
    assert first.code == 1
    turbo = new_api_submit(client, "/mj-turbo/mj/submit/imagine", {"prompt": "in a hurry"})
    assert turbo.code == 1  # turbo jumps the queue: nothing ahead of it
    third = client.post("/mj/submit/imagine", json={"prompt": "third"}, headers={"mj-api-secret": KEY})
    assert b'"code":22' in third.content  # compact, so new-api can rewrite it to 1
    assert third.json()["properties"]["numberOfQueues"] == 2
    fetched = client.get(f"/mj-turbo/mj/task/{turbo.result}/fetch", headers={"mj-api-secret": KEY}).json()
    assert fetched["mode"] == "TURBO"
    queue = client.get("/mj/task/queue", headers={"mj-api-secret": KEY}).json()
    assert [t["id"] for t in queue] == [turbo.result, first.result, third.json()["result"]]
    runtime.run_pending()
    assert client.get("/mj/task/queue", headers={"mj-api-secret": KEY}).json() == []
    listed = client.get("/mj/task/list", headers={"mj-api-secret": KEY}).json()
    assert [t["id"] for t in listed][:3] == [third.json()["result"], turbo.result, first.result]


def test_error_codes(relay) -> None:  # type: ignore[no-untyped-def]
    client, runtime = relay
    banned = new_api_submit(client, "/mj/submit/imagine", {"prompt": "a scene of GORE"})
    assert banned.code == 24 and banned.properties["bannedWord"] == "gore"
    missing = new_api_submit(client, "/mj/submit/action", {"taskId": "1700000000000999", "customId": "MJ::JOB::x"})
    assert missing.code == 3
    for body in ({}, {"prompt": 7}, {"prompt": "x --ar 0:0"}):
        assert new_api_submit(client, "/mj/submit/imagine", body).code == 4
    edits = new_api_submit(
        client, "/mj/submit/edits", {"prompt": "x", "image": png_data_url(np.zeros((8, 8), np.uint8))}
    )
    assert edits.code == 4 and "not supported" in (edits.description or "")
    for _ in range(20):
        new_api_submit(client, "/mj/submit/imagine", {"prompt": "filler"})
    full = new_api_submit(client, "/mj/submit/imagine", {"prompt": "one too many"})
    assert full.code == 23
    assert len(runtime.store.list_tasks("RELAY", limit=100)) == 20  # the refused submits left nothing behind
    unauthorised = client.post("/mj/submit/imagine", json={"prompt": "x"})
    assert unauthorised.status_code == 401 and unauthorised.json()["code"] == 4
    assert client.get("/mj/task/1700000000000999/fetch", headers={"mj-api-secret": KEY}).status_code == 404


def test_cancel_reports_a_finished_task_to_new_api(relay) -> None:  # type: ignore[no-untyped-def]
    client, _ = relay
    task_id = new_api_submit(client, "/mj/submit/imagine", {"prompt": "changed my mind"}).result
    answer = client.post(f"/mj/task/{task_id}/cancel", headers={"mj-api-secret": KEY})
    assert answer.status_code == 200 and answer.json()["code"] == 1
    cancelled = new_api_poll(client, [task_id])[task_id]  # type: ignore[index, list-item]
    assert cancelled.status == "CANCEL" and finished(cancelled) and cancelled.failReason
    again = client.post(f"/mj/task/{task_id}/cancel", headers={"mj-api-secret": KEY})
    assert again.status_code == 409 and again.json()["code"] == 4


# --- chatgpt-web-midjourney-proxy ------------------------------------------------------------------------
DOOY = {"Content-Type": "application/json", "mj-api-secret": KEY}


def dooy(client: TestClient, path: str, data: dict[str, Any] | None = None) -> Any:
    """mjFetch: GET without data, POST with it; always JSON; non-2xx is an error."""
    answer = client.post(path, json=data, headers=DOOY) if data is not None else client.get(path, headers=DOOY)
    assert answer.status_code < 300, answer.text
    return answer.json()


def test_chatgpt_web_flow(relay) -> None:  # type: ignore[no-untyped-def]
    client, runtime = relay
    d = dooy(
        client,
        "/mj/submit/imagine",
        {"base64Array": [], "notifyHook": "", "prompt": "a paper crane", "state": "", "botType": "NIJI_JOURNEY"},
    )
    assert d["code"] in (1, 22)
    runtime.run_pending()
    task = dooy(client, f"/mj/task/{d['result']}/fetch")
    assert task["status"] == "SUCCESS" and task["progress"] == "100%" and task["botType"] == "NIJI_JOURNEY"
    assert "--niji" in task["promptEn"]
    for button in task["buttons"]:
        Button.model_validate(button)
    assert any(":upsample::1" in b["customId"] for b in task["buttons"])
    assert any("reroll::0" in b["customId"] for b in task["buttons"])

    u2 = next(b["customId"] for b in task["buttons"] if ":upsample::2" in b["customId"])
    up = dooy(client, "/mj/submit/action", {"customId": u2, "taskId": task["id"]})
    runtime.run_pending()
    upscaled = dooy(client, f"/mj/task/{up['result']}/fetch")
    ids = [b["customId"] for b in upscaled["buttons"]]
    for needle in (
        ":Inpaint::1",
        "Outpaint::50",
        "Outpaint::75",
        "CustomZoom::",
        "pan_left",
        "high_variation",
        "low_variation",
        "upsample_v6_2x_subtle",
        "upsample_v6_2x_creative",
    ):
        assert any(needle in i for i in ids), needle

    # Region: action, then modal with the result whatever the code
    d = dooy(
        client, "/mj/submit/action", {"customId": next(i for i in ids if ":Inpaint::1" in i), "taskId": upscaled["id"]}
    )
    assert d["properties"] is not None
    mask = box_mask(64, 64, (10, 10, 30, 30))
    d2 = dooy(
        client, "/mj/submit/modal", {"maskBase64": png_data_url(mask), "prompt": "a red sun", "taskId": d["result"]}
    )
    assert d2["code"] == 1 and d2["result"] == d["result"]

    # Custom Zoom: action, then modal with the prompt the user edited
    d = dooy(
        client, "/mj/submit/action", {"customId": next(i for i in ids if "CustomZoom::" in i), "taskId": upscaled["id"]}
    )
    assert "confirm" in d["description"] and d["code"] == 21
    dooy(client, "/mj/submit/modal", {"prompt": f"{d['properties']['finalPrompt']}  --zoom 1.8", "taskId": d["result"]})
    runtime.run_pending()
    zoomed = dooy(client, f"/mj/task/{d['result']}/fetch")
    assert zoomed["status"] == "SUCCESS" and zoomed["width"] >= 1.8 * upscaled["width"] - 8

    # the gallery asks with JSON numbers
    gallery = dooy(client, "/mj/task/list-by-condition", {"ids": [int(task["id"]), int(upscaled["id"])]})
    assert [t["id"] for t in gallery] == [task["id"], upscaled["id"]]
    seed = dooy(client, f"/mj/task/{task['id']}/image-seed")
    assert int(seed["result"]) > 0


def test_chatgpt_web_describe_blend_and_shorten(relay) -> None:  # type: ignore[no-untyped-def]
    """Dooy's img2txt, blend and shorten bodies (aiBlend.vue, mjText.vue), and its changeV2 press: action, and
    when the description says "confirm", modal with `properties.finalPrompt`."""
    client, runtime = relay
    d = dooy(client, "/mj/submit/describe", {"base64": _pictures(1)[0], "botType": "MID_JOURNEY"})
    assert d["code"] == 1
    runtime.run_pending()
    described = dooy(client, f"/mj/task/{d['result']}/fetch")
    assert described["status"] == "SUCCESS" and described["progress"] == "100%"
    for button in described["buttons"]:
        Button.model_validate(button)
    pick = next(b["customId"] for b in described["buttons"] if "Job::PicReader::2" in b["customId"])
    assert any("Picread::Retry" in b["customId"] for b in described["buttons"])
    d = dooy(client, "/mj/submit/action", {"customId": pick, "taskId": described["id"]})
    assert d["code"] == 21 and "confirm" in d["description"]
    d = dooy(client, "/mj/submit/modal", {"taskId": d["result"], "prompt": d["properties"]["finalPrompt"]})
    assert d["code"] == 1
    runtime.run_pending()
    imagined = dooy(client, f"/mj/task/{d['result']}/fetch")
    second = described["properties"]["finalPrompt"].split("\n\n")[1].split(" ", 1)[1]
    assert imagined["status"] == "SUCCESS" and imagined["prompt"] == second

    d = dooy(
        client, "/mj/submit/blend", {"base64Array": _pictures(2), "botType": "MID_JOURNEY", "dimensions": "SQUARE"}
    )
    runtime.run_pending()
    blended = dooy(client, f"/mj/task/{d['result']}/fetch")
    assert blended["status"] == "SUCCESS" and blended["width"] == blended["height"]
    assert any(":upsample::1" in b["customId"] for b in blended["buttons"])

    d = dooy(client, "/mj/submit/shorten", {"prompt": "a red fox in a snowy forest at dusk, highly detailed"})
    runtime.run_pending()
    shortened = dooy(client, f"/mj/task/{d['result']}/fetch")
    assert shortened["status"] == "SUCCESS" and "**SHORTENED OPTIONS**" in shortened["properties"]["finalPrompt"]
    pick = next(b["customId"] for b in shortened["buttons"] if "PromptAnalyzer::1" in b["customId"])
    d = dooy(client, "/mj/submit/action", {"customId": pick, "taskId": shortened["id"]})
    assert d["code"] == 21
    d = dooy(client, "/mj/submit/modal", {"taskId": d["result"], "prompt": d["properties"]["finalPrompt"]})
    runtime.run_pending()
    assert dooy(client, f"/mj/task/{d['result']}/fetch")["prompt"] == "red fox snowy forest dusk"


# --- ChatGPT-Midjourney (NextChat fork) --------------------------------------------------------------------
LICOY = {"Content-Type": "application/json", "Accept": "application/json", "Authorization": KEY}


def test_chatgpt_midjourney_flow_with_automatic_modal(relay) -> None:  # type: ignore[no-untyped-def]
    client, runtime = relay
    answer = client.post(
        "/mj/submit/imagine",
        headers=LICOY,
        json={"prompt": "a cabin in the woods --v 6 --no people --ar 1:1 --seed 42"},
    )
    assert answer.status_code == 200 and answer.json()["result"]  # it only checks that result is truthy
    runtime.run_pending()
    task = client.get(f"/mj/task/{answer.json()['result']}/fetch", headers=LICOY).json()
    assert task["status"] == "SUCCESS" and task["imageUrl"] and task["promptEn"]
    u1 = next(b for b in task["buttons"] if (b["label"] or b["emoji"]) == "U1")
    upscaled_id = client.post(
        "/mj/submit/action", headers=LICOY, json={"customId": u1["customId"], "taskId": task["id"]}
    ).json()["result"]
    runtime.run_pending()
    upscaled = client.get(f"/mj/task/{upscaled_id}/fetch", headers=LICOY).json()
    for prefix, modal_data in (("MJ::Inpaint::1", None), ("MJ::CustomZoom", {})):
        button = next(b for b in upscaled["buttons"] if b["customId"].startswith(prefix))
        new_id = client.post(
            "/mj/submit/action", headers=LICOY, json={"customId": button["customId"], "taskId": upscaled_id}
        ).json()["result"]
        polled = client.get(f"/mj/task/{new_id}/fetch", headers=LICOY).json()
        assert polled["status"] == "MODAL"
        if modal_data is None:  # the mask editor: a PNG data URL at canvas size (320x320), black with white
            modal_data = {"maskBase64": png_data_url(box_mask(320, 320, (100, 100, 220, 220))), "prompt": "a lamp"}
        answer = client.post("/mj/submit/modal", headers=LICOY, json={**modal_data, "taskId": new_id})
        assert answer.status_code == 200 and answer.json()["result"] == new_id
        runtime.run_pending()
        done = client.get(f"/mj/task/{new_id}/fetch", headers=LICOY).json()
        assert done["status"] == "SUCCESS" and done["buttons"] and done["imageUrl"]


def test_a_broken_disk_is_code_9_not_a_crash(relay, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    client, runtime = relay

    def disk_error(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(runtime.store, "insert_task", disk_error)
    answer = client.post("/mj/submit/imagine", json={"prompt": "x"}, headers={"mj-api-secret": KEY})
    assert answer.status_code == 500 and answer.json()["code"] == 9 and answer.json()["result"] is None
    answer = client.post("/v1/midjourney/generations", json={"prompt": "x"}, headers={"mj-api-secret": KEY})
    assert answer.status_code == 500 and answer.json()["code"] == 500
