"""The apimart dialect: envelopes, both request forms, the query endpoints, and bad input."""

from __future__ import annotations

import base64
import contextlib
import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from journeyd.domain.keys import ApiKey, hash_secret
from journeyd.runtime import build_runtime
from tests.conftest import LOOPBACK, Flow, TestClient, box_mask, create_app, make_settings, png_data_url


def _error(answer, status: int, needle: str) -> None:  # type: ignore[no-untyped-def]
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["code"] == status
    assert needle.lower() in body["error"]["message"].lower(), body


def _region_task(flow: Flow) -> tuple[str, dict]:  # type: ignore[type-arg]
    upscaled = flow.upscale(flow.imagine()["id"])
    return flow.submit("/v1/midjourney/generations/inpaint", {"task_id": upscaled["id"]}), upscaled


def test_imagine_alias_metadata_and_structured_fields(flow: Flow) -> None:
    task_id = flow.submit(
        "/v1/midjourney/generations/imagine",
        {
            "prompt": "a lighthouse --ar 1:1 --seed 3",
            "size": "16:9",
            "seed": 99,
            "negative_prompt": "fog",
            "speed": "turbo",
            "metadata": {"order": 17, "tags": ["a"]},
        },
    )
    task = flow.done(task_id)
    assert task["metadata"] == {"order": 17, "tags": ["a"]}
    assert task["speed"] == "turbo"
    assert task["properties"]["seed"] == 99
    assert task["properties"]["finalPrompt"] == "a lighthouse --ar 16:9 --no fog --seed 99 --turbo"
    assert task["properties"]["width"] > task["properties"]["height"]


def test_unified_task_endpoint_uses_lowercase_statuses_and_integer_progress(flow: Flow) -> None:
    task_id = flow.submit("/v1/midjourney/generations", {"prompt": "a sailboat"})
    pending = flow.client.get(f"/v1/tasks/{task_id}").json()
    assert pending["code"] == 200 and pending["data"]["status"] == "pending" and pending["data"]["progress"] == 0
    flow.runtime.run_pending()
    done = flow.client.get(f"/v1/tasks/{task_id}").json()["data"]
    assert done["status"] == "completed" and done["progress"] == 100
    assert len(done["result"]["images"][0]["url"]) == 4


def test_every_action_endpoint_runs(flow: Flow) -> None:
    grid = flow.imagine("a desert at dusk --ar 1:1")
    for path, body in [
        ("variation", {"index": 2}),
        ("high-variation", {"index": 1}),
        ("low-variation", {"index": 4}),
        ("reroll", {}),
    ]:
        child = flow.done(flow.submit(f"/v1/midjourney/generations/{path}", {"task_id": grid["id"], **body}))
        assert len(child["image_urls"]) == 4, path
    upscaled = flow.upscale(grid["id"], 4)
    size = (upscaled["properties"]["width"], upscaled["properties"]["height"])
    zoom = flow.done(flow.submit("/v1/midjourney/generations/zoom", {"task_id": upscaled["id"], "zoom_ratio": 1.5}))
    assert zoom["action"] == "ZOOM" and zoom["properties"]["width"] >= size[0] * 1.5
    pan = flow.done(flow.submit("/v1/midjourney/generations/pan", {"task_id": upscaled["id"], "direction": "up"}))
    assert pan["action"] == "PAN" and pan["properties"]["height"] > size[1]
    assert pan["properties"]["width"] == size[0]
    for path in ("high-variation", "low-variation"):
        child = flow.done(flow.submit(f"/v1/midjourney/generations/{path}", {"task_id": upscaled["id"]}))
        assert child["action"] == "VARIATION"


def test_custom_id_alone_is_enough(flow: Flow) -> None:
    grid = flow.imagine()
    u2 = next(b["customId"] for b in grid["buttons"] if b["label"] == "U2")
    task = flow.done(flow.submit("/v1/midjourney/generations/upscale", {"custom_id": u2}))
    np.testing.assert_array_equal(flow.image(task["image_urls"][0]), flow.image(grid["image_urls"][1]))
    _error(
        flow.post("/v1/midjourney/generations/pan", {"task_id": grid["id"], "custom_id": u2}),
        400,
        "is not a pan button",
    )


def test_images_have_stable_urls_and_content_type(flow: Flow) -> None:
    grid = flow.imagine()
    assert grid["grid_image_url"].startswith("http://testserver/images/")
    first = flow.client.get(grid["image_urls"][0].replace("http://testserver", ""))
    assert first.headers["content-type"] == "image/png"
    assert flow.client.get(grid["image_urls"][0].replace("http://testserver", "")).content == first.content
    assert flow.client.get("/images/NOTATASK/0.png").status_code == 404
    assert flow.client.get("/images/../../etc/passwd").status_code == 404


# --- bad input --------------------------------------------------------------------------------------------
def test_malformed_json_and_wrong_types_are_400(flow: Flow) -> None:
    answer = flow.client.post(
        "/v1/midjourney/generations", content=b'{"prompt": "x"', headers={"content-type": "application/json"}
    )
    _error(answer, 400, "not valid JSON")
    _error(
        flow.client.post("/v1/midjourney/generations", content=b"[1,2]", headers={"content-type": "application/json"}),
        400,
        "JSON object",
    )
    _error(flow.client.post("/v1/midjourney/generations"), 400, "body is missing")
    _error(flow.post("/v1/midjourney/generations", {"prompt": 5}), 400, "prompt")
    _error(flow.post("/v1/midjourney/generations", {"prompt": "x", "speed": "ludicrous"}), 400, "speed")
    _error(flow.post("/v1/midjourney/generations", {"prompt": "x", "image_urls": "nope"}), 400, "image_urls")
    _error(flow.post("/v1/midjourney/generations", {"prompt": "x --chaos 500"}), 400, "--chaos must be")
    _error(flow.post("/v1/midjourney/generations", {"prompt": "   "}), 400, "prompt is empty")
    _error(flow.post("/v1/midjourney/generations", {"prompt": "x" * 8001}), 400, "8000")


def test_indexes_and_ids_are_checked(flow: Flow) -> None:
    grid = flow.imagine()
    _error(flow.post("/v1/midjourney/generations/upscale", {"task_id": grid["id"], "index": 5}), 400, "index")
    _error(flow.post("/v1/midjourney/generations/upscale", {"task_id": grid["id"], "index": 0}), 400, "index")
    _error(flow.post("/v1/midjourney/generations/upscale", {"task_id": grid["id"], "index": "two"}), 400, "index")
    _error(flow.post("/v1/midjourney/generations/upscale", {"task_id": grid["id"]}), 400, "needs index")
    _error(
        flow.post("/v1/midjourney/generations/upscale", {"task_id": "task_01KV52C0TEJSYZMCG0NCS4YWKK", "index": 1}),
        404,
        "not found",
    )
    _error(
        flow.post("/v1/midjourney/generations/upscale", {"task_id": "'; DROP TABLE tasks", "index": 1}),
        404,
        "not found",
    )
    assert flow.client.get("/v1/midjourney/task_nope").status_code == 404
    _error(
        flow.post("/v1/midjourney/generations/upscale", {"task_id": grid["id"], "custom_id": "MJ::JOB::x"}),
        400,
        "not a button",
    )


def test_parent_rules(flow: Flow) -> None:
    grid = flow.imagine()
    for path in ("inpaint", "zoom", "pan"):
        _error(
            flow.post(f"/v1/midjourney/generations/{path}", {"task_id": grid["id"], "direction": "left"}),
            400,
            "This action requires an upscaled task.",
        )
    running = flow.submit("/v1/midjourney/generations", {"prompt": "still queued"})
    _error(flow.post("/v1/midjourney/generations/upscale", {"task_id": running, "index": 1}), 409, "still submitted")
    upscaled = flow.upscale(grid["id"])
    _error(
        flow.post("/v1/midjourney/generations/upscale", {"task_id": upscaled["id"], "index": 1}), 400, "four-image grid"
    )


def test_modal_needs_a_usable_mask(flow: Flow) -> None:
    modal_id, upscaled = _region_task(flow)
    size = (upscaled["properties"]["width"], upscaled["properties"]["height"])
    modal = "/v1/midjourney/generations/modal"
    _error(flow.post(modal, {"task_id": modal_id, "prompt": "x"}), 400, "needs a mask")
    _error(
        flow.post(modal, {"task_id": modal_id, "mask_url": png_data_url(np.zeros((16, 16), np.uint8))}),
        422,
        "selects nothing",
    )
    _error(
        flow.post(modal, {"task_id": modal_id, "mask_url": base64.b64encode(b"just some text").decode()}),
        422,
        "not an image",
    )
    _error(flow.post(modal, {"task_id": modal_id, "mask_url": "data:image/png;base64,@@@not base64@@@"}), 400, "base64")
    _error(flow.post(modal, {"task_id": modal_id, "mask_url": "ftp://example.com/m.png"}), 400, "mask_url")
    _error(flow.post(modal, {"task_id": modal_id, "mask_url": "http://127.0.0.1/mask.png"}), 422, "loopback")
    _error(flow.post(modal, {"task_id": modal_id, "mask_url": "http://169.254.169.254/latest"}), 422, "169.254")
    _error(flow.post(modal, {"task_id": modal_id, "mask_url": _bomb_png(20000, 20000)}), 413, "megapixels")
    # none of that moved the task on or left a mask behind
    assert flow.fetch(modal_id)["status"] == "MODAL"
    assert not list((flow.runtime.settings.images_dir / modal_id.removeprefix("task_")).glob("mask*"))
    # a JPEG or WebP mask works too
    mask = box_mask(size[0], size[1], (0, 0, size[0] // 3, size[1] // 3))
    flow.submit(modal, {"task_id": modal_id, "mask_url": png_data_url(mask, "WEBP")})
    assert flow.done(modal_id)["status"] == "SUCCESS"
    _error(flow.post(modal, {"task_id": modal_id, "mask_url": png_data_url(mask)}), 409, "not waiting for a modal")


def test_modal_refuses_tasks_that_are_not_modal(flow: Flow) -> None:
    grid = flow.imagine()
    _error(
        flow.post("/v1/midjourney/generations/modal", {"task_id": grid["id"], "prompt": "x"}),
        409,
        "not waiting for a modal",
    )


def test_huge_bodies_are_refused_before_reading(tmp_path: Path, clock) -> None:  # type: ignore[no-untyped-def]
    runtime = build_runtime(make_settings(tmp_path, max_request_bytes=1024), clock=clock, seed=1)
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        answer = client.post("/v1/midjourney/generations", json={"prompt": "x" * 5000})
        _error(answer, 413, "request body is over")


def _bomb_png(width: int, height: int) -> str:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    return base64.b64encode(png).decode()


# --- keys and other people's tasks ------------------------------------------------------------------------
@pytest.fixture
def keyed(runtime, client):  # type: ignore[no-untyped-def]
    for name, secret in (("alice", "jd_alice_secret"), ("bob", "jd_bob_secret")):
        runtime.store.create_key(
            ApiKey(id=name.upper() * 2, prefix=secret[:8], name=name, balance=100, created_at=0), hash_secret(secret)
        )
    return Flow(client, runtime, {"Authorization": "Bearer jd_alice_secret"})


def test_keys_are_required_once_one_exists_and_tasks_are_private(keyed: Flow) -> None:
    grid = keyed.imagine()
    anonymous = keyed.client.get(f"/v1/midjourney/{grid['id']}")
    _error(anonymous, 401, "API key")
    _error(
        keyed.client.get(f"/v1/midjourney/{grid['id']}", headers={"Authorization": "Bearer wrong"}),
        401,
        "not recognised",
    )
    bob = {"Authorization": "Bearer jd_bob_secret"}
    _error(keyed.client.get(f"/v1/midjourney/{grid['id']}", headers=bob), 404, "not found")
    _error(
        keyed.client.post("/v1/midjourney/generations/upscale", json={"task_id": grid["id"], "index": 1}, headers=bob),
        404,
        "not found",
    )
    # the other header forms midjourney-proxy clients use
    for headers in ({"Authorization": "jd_alice_secret"}, {"mj-api-secret": "jd_alice_secret"}):
        assert keyed.client.get(f"/v1/midjourney/{grid['id']}", headers=headers).status_code == 200


def test_without_keys_only_loopback_is_served(runtime) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(runtime, manage_runtime=False), client=("203.0.113.9", 4000)) as remote:
        _error(remote.post("/v1/midjourney/generations", json={"prompt": "x"}), 403, "loopback")


# --- fetching masks over HTTP -------------------------------------------------------------------------------
class _MaskServer(BaseHTTPRequestHandler):
    mask_png: bytes = b""

    def do_GET(self) -> None:
        if self.path == "/slow.png":
            time.sleep(1.5)
        self.send_response(200)
        self.send_header("content-type", "image/png")
        self.send_header("content-length", str(len(self.mask_png)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError):  # the fetcher gave up on the slow route, as it should
            self.wfile.write(self.mask_png)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mask_server() -> Iterator[str]:
    buffer = io.BytesIO()
    Image.fromarray(box_mask(64, 64, (16, 16, 40, 40))).save(buffer, "PNG")
    _MaskServer.mask_png = buffer.getvalue()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MaskServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_mask_urls_are_fetched_and_slow_ones_time_out(tmp_path: Path, clock, mask_server: str) -> None:  # type: ignore[no-untyped-def]
    runtime = build_runtime(make_settings(tmp_path, allow_private_urls=True, fetch_timeout_s=0.5), clock=clock, seed=5)
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        flow = Flow(client, runtime)
        modal_id, _ = _region_task(flow)
        _error(
            flow.post("/v1/midjourney/generations/modal", {"task_id": modal_id, "mask_url": f"{mask_server}/slow.png"}),
            422,
            "did not answer",
        )
        flow.submit("/v1/midjourney/generations/modal", {"task_id": modal_id, "mask_url": f"{mask_server}/mask.png"})
        assert flow.done(modal_id)["status"] == "SUCCESS"


def test_the_openapi_document_describes_the_dialect(client) -> None:  # type: ignore[no-untyped-def]
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/midjourney/generations",
        "/v1/midjourney/generations/inpaint",
        "/v1/midjourney/generations/modal",
        "/v1/midjourney/{task_id}",
        "/v1/tasks/{task_id}",
    ):
        assert path in paths, path
    modal = spec["components"]["schemas"]["ModalBody"]["properties"]
    assert "white = repaint" in modal["mask_url"]["description"]


def test_too_many_queued_tasks_is_429(tmp_path: Path, clock) -> None:  # type: ignore[no-untyped-def]
    runtime = build_runtime(make_settings(tmp_path, max_queued_per_key=2), clock=clock, seed=3)
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        flow = Flow(client, runtime)
        for _ in range(2):
            flow.submit("/v1/midjourney/generations", {"prompt": "queued"})
        _error(flow.post("/v1/midjourney/generations", {"prompt": "one too many"}), 429, "2 tasks queued")
        runtime.run_pending()
        flow.submit("/v1/midjourney/generations", {"prompt": "room again"})
