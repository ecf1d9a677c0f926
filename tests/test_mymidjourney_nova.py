"""ImaginePro's current paths (`/api/v1/nova/...`, `/api/v1/message/fetch/...`), its older field names,
and its structured fields, as its clients send them."""

from __future__ import annotations

from typing import Any

import pytest

from journeyd.service import Caller
from tests.conftest import Flow, box_mask
from tests.test_mymidjourney import _webp_base64


def _post(flow: Flow, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = flow.client.post(path, json=body)
    return {"status": answer.status_code, **answer.json()}


def _fetch(flow: Flow, message_id: str) -> dict[str, Any]:
    answer = flow.client.get(f"/api/v1/message/fetch/{message_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_nova_paths_run_imagine_u1_and_vary_region_like_the_midjourney_ones(flow: Flow) -> None:
    submitted = _post(flow, "/api/v1/nova/imagine", {"prompt": "a lighthouse on a cliff --ar 3:2", "ref": "n-1"})
    assert submitted["status"] == 200 and submitted["success"] is True
    message_id = submitted["messageId"]
    assert submitted["message_id"] == message_id
    flow.runtime.run_pending()
    done = _fetch(flow, message_id)
    assert done["status"] == "DONE" and done["ref"] == "n-1" and done["message_id"] == message_id
    # the same message through the older path, and the same answer
    assert flow.client.get(f"/api/v1/midjourney/message/{message_id}").json() == done

    upscaled = _post(flow, "/api/v1/nova/button", {"message_id": message_id, "button": "U1"})  # the older spelling
    assert upscaled["status"] == 200 and upscaled["message_id"] == upscaled["messageId"]
    flow.runtime.run_pending()
    parent = flow.image(_fetch(flow, upscaled["messageId"])["uri"])
    height, width = parent.shape[:2]
    mask = box_mask(width, height, (width // 4, height // 4, width // 2, height // 2))
    region = _post(
        flow,
        "/api/v1/nova/button",
        {"messageId": upscaled["messageId"], "button": "Vary (Region)", "mask": _webp_base64(mask), "prompt": "a sun"},
    )
    flow.runtime.run_pending()
    finished = _fetch(flow, region["messageId"])
    assert finished["status"] == "DONE" and len(finished["images"]) == 4
    assert finished["originatingMessageId"] == upscaled["messageId"]


def test_webhook_override_is_taken_under_its_older_name(flow: Flow) -> None:
    answer = _post(flow, "/api/v1/nova/imagine", {"prompt": "x", "webhook_override": "ftp://a/b"})
    assert answer["status"] == 400 and "webhookOverride" in answer["error"]  # read, then refused for its scheme


def test_structured_fields_set_the_prompt_spec_and_unknown_ones_are_kept(flow: Flow) -> None:
    body = {
        "prompt": "a red fox in snow --ar 1:1 --seed 3",
        "negativePrompt": "trees, people",
        "seed": 12345,
        "width": 1024,
        "height": 768,
        "steps": 20,
        "cfgScale": 6.5,
        "model": "flux-dev",
        "extra": {"tags": ["a", "b"]},
    }
    message_id = _post(flow, "/api/v1/nova/imagine", body)["messageId"]
    task = flow.fetch(message_id)  # the apimart view shows what the engine is asked for
    assert (
        task["properties"]["finalPrompt"]
        == "a red fox in snow --ar 4:3 --no trees, people --seed 12345 --steps 20 --cfg 6.5"
    )
    assert task["properties"]["seed"] == 12345
    assert task["metadata"] == {"model": "flux-dev", "extra": {"tags": ["a", "b"]}}  # kept, not dropped
    assert task["prompt"] == body["prompt"]  # as the client wrote it
    flow.runtime.run_pending()
    finished = flow.fetch(message_id)
    assert finished["status"] == "SUCCESS" and finished["properties"]["width"] > finished["properties"]["height"]


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"seed": -1}, "--seed must be from 0 to 4294967295"),
        ({"seed": 2**40}, "--seed must be from 0 to 4294967295"),
        ({"width": 0, "height": 768}, "width and height must be from 1"),
        ({"width": 1024}, "width and height go together"),
        ({"width": 8000, "height": 100}, "too extreme"),
        ({"width": "wide", "height": 768}, "width"),
        ({"cfgScale": "x"}, "cfgScale"),
        ({"cfgScale": 99}, "--cfg must be from 0 to 30"),
        ({"steps": 0}, "--steps must be from 1 to 150"),
        ({"steps": 2.5}, "steps"),
        ({"negativePrompt": ["trees"]}, "negativePrompt"),
    ],
)
def test_bad_structured_fields_are_a_400_in_the_dialects_envelope(
    flow: Flow, fields: dict[str, Any], words: str
) -> None:
    for path in ("/api/v1/nova/imagine", "/api/v1/midjourney/imagine"):
        answer = _post(flow, path, {"prompt": "a red fox", **fields})
        assert answer["status"] == 400 and answer["success"] is False, answer
        assert words in answer["error"], answer
        assert set(answer) == {"status", "success", "error"}
    assert flow.runtime.service.recent(Caller(None)) == []  # nothing was made


def test_unknown_nova_and_message_paths_answer_in_this_dialects_envelope(flow: Flow) -> None:
    for method, path in (("POST", "/api/v1/nova/blend"), ("GET", "/api/v1/message/nothing/x")):
        answer = flow.client.request(method, path, json={})
        assert answer.status_code == 404 and answer.json()["success"] is False
    missing = flow.client.get("/api/v1/message/fetch/3f1e0d6c-0000-4000-8000-000000000000")
    assert missing.status_code == 404 and missing.json()["success"] is False


def test_the_openapi_document_lists_each_nova_operation(flow: Flow) -> None:
    document = flow.client.get("/openapi.json").json()
    paths = document["paths"]
    for path, method in (
        ("/api/v1/nova/imagine", "post"),
        ("/api/v1/nova/button", "post"),
        ("/api/v1/message/fetch/{messageId}", "get"),
    ):
        operation = paths[path][method]
        assert operation["summary"] and {"200", "400", "404"} <= set(operation["responses"]), path
    imagine = paths["/api/v1/nova/imagine"]["post"]
    links = imagine["responses"]["200"]["links"]
    assert links["message"]["operationId"] == paths["/api/v1/message/fetch/{messageId}"]["get"]["operationId"]
    schema = document["components"]["schemas"]["MmjImagineBody"]["properties"]
    assert {"negativePrompt", "seed", "width", "height", "steps", "cfgScale"} <= set(schema)
