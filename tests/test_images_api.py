"""GET /images/{task}/{name} serves from whichever store holds the images: a local file or an S3
object, with the same media type, cache header and refusals."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from journeyd.api import images as images_api
from journeyd.media.s3 import S3ImageStore
from journeyd.media.storage import ImageStore, LocalImageStore
from tests.image_store_contract import task_id
from tests.seaweed import ACCESS_KEY, SECRET_KEY, Seaweed

IMMUTABLE = "public, max-age=31536000, immutable"


def s3(server: Seaweed, prefix: str) -> S3ImageStore:
    return S3ImageStore(
        server.bucket, prefix, endpoint_url=server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY
    )


def serving(images: ImageStore) -> TestClient:
    app = FastAPI()
    app.state.images = images
    app.include_router(images_api.router)
    return TestClient(app)


@pytest.fixture(params=["local", "s3"])
def images(request: pytest.FixtureRequest, tmp_path: Path) -> ImageStore:
    if request.param == "local":
        return LocalImageStore(tmp_path / "images")
    return s3(request.getfixturevalue("seaweed"), f"api/{secrets.token_hex(4)}")


@pytest.fixture
def http(images: ImageStore) -> Iterator[TestClient]:
    with serving(images) as client:
        yield client


def test_an_image_is_served_with_its_media_type_and_cached_for_good(images: ImageStore, http: TestClient) -> None:
    task = task_id()
    images.put_many([(f"{task}/0.png", b"\x89PNG image"), (f"{task}/preview.jpg", b"\xff\xd8 jpeg")])
    png, jpeg = http.get(f"/images/{task}/0.png"), http.get(f"/images/{task}/preview.jpg")
    assert (png.status_code, png.content, png.headers["content-type"]) == (200, b"\x89PNG image", "image/png")
    assert (jpeg.content, jpeg.headers["content-type"]) == (b"\xff\xd8 jpeg", "image/jpeg")
    assert png.headers["cache-control"] == jpeg.headers["cache-control"] == IMMUTABLE


@pytest.mark.parametrize("name", ["input-0.png", "9.png", "mask.gif", "GRID.png", "..png"])
def test_inputs_missing_images_and_bad_names_are_a_404(images: ImageStore, http: TestClient, name: str) -> None:
    task = task_id()
    images.put(f"{task}/input-0.png", b"the client's own image")
    answer = http.get(f"/images/{task}/{name}")
    assert answer.status_code == 404
    assert answer.json() == {"code": 404, "error": {"message": f"no image {task}/{name}", "type": "not_found"}}


def test_an_s3_server_that_is_down_is_a_503_naming_it(tmp_path: Path) -> None:
    server = Seaweed(tmp_path / "seaweed").start()
    try:
        images = s3(server, "down")
        with serving(images) as http:
            server.stop()
            answer = http.get(f"/images/{task_id()}/0.png")
    finally:
        server.stop()
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["type"] == "storage_unavailable"
    assert error["message"].startswith(f"journeyd cannot read from s3://{server.bucket}/down at {server.endpoint}: ")
