"""Shared fixtures: a runtime on a temporary data dir with an injected clock, and an HTTP client.

API tests drive real HTTP requests in-process over ASGI. Workers do not run on threads here:
`runtime.run_pending()` runs queued tasks on the test's thread, so no test waits or sleeps.
"""

from __future__ import annotations

import atexit
import base64
import io
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from journeyd.clock import ManualClock
from journeyd.config import Settings
from journeyd.runtime import Runtime, build_runtime

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
from starlette.testclient import TestClient  # noqa: E402

from journeyd.api.app import create_app  # noqa: E402

LOOPBACK = ("127.0.0.1", 50000)

# No test sees this machine's Hugging Face cache (the `auto` engine would serve a model it found there),
# nor its servers' subprocesses: set before huggingface_hub is imported, since it reads this once.
HUB_CACHE = tempfile.mkdtemp(prefix="journeyd-tests-hub-")
os.environ["HF_HUB_CACHE"] = HUB_CACHE
atexit.register(shutil.rmtree, HUB_CACHE, True)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread() -> Iterator[None]:
    """The tiny test models gain nothing from threads, and beside another torch process on two
    cores, two threads each ran several times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    # "testserver" is the Host name Starlette's TestClient sends
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "workers": 0,
        "classic_size": 128,
        "allowed_hosts": "testserver",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
def hub_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE for a module's tests: models load from folders and the cache, never the hub."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def runtime(settings: Settings, clock: ManualClock) -> Iterator[Runtime]:
    runtime = build_runtime(settings, clock=clock, seed=1234)
    yield runtime
    runtime.store.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as test_client:
        yield test_client


class Flow:
    """The apimart calls a client makes, with the worker run in between."""

    def __init__(self, client: TestClient, runtime: Runtime, headers: dict[str, str] | None = None) -> None:
        self.client, self.runtime, self.headers = client, runtime, headers or {}

    def post(self, path: str, body: Any) -> Any:
        return self.client.post(path, json=body, headers=self.headers)

    def submit(self, path: str, body: dict[str, Any]) -> str:
        answer = self.post(path, body)
        assert answer.status_code == 200, answer.text
        return answer.json()["data"][0]["task_id"]

    def fetch(self, task_id: str) -> dict[str, Any]:
        answer = self.client.get(f"/v1/midjourney/{task_id}", headers=self.headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def done(self, task_id: str) -> dict[str, Any]:
        self.runtime.run_pending()
        task = self.fetch(task_id)
        assert task["status"] == "SUCCESS", task
        return task

    def imagine(self, prompt: str = "a red fox in the snow --ar 3:2", **extra: Any) -> dict[str, Any]:
        return self.done(self.submit("/v1/midjourney/generations", {"prompt": prompt, **extra}))

    def upscale(self, task_id: str, index: int = 1) -> dict[str, Any]:
        return self.done(self.submit("/v1/midjourney/generations/upscale", {"task_id": task_id, "index": index}))

    def image(self, url: str) -> np.ndarray:
        path = url.split("://", 1)[1].split("/", 1)[1]
        answer = self.client.get("/" + path)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "image/png"
        return np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"))


@pytest.fixture
def flow(client: TestClient, runtime: Runtime) -> Flow:
    return Flow(client, runtime)


def png_data_url(pixels: np.ndarray, kind: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, kind)
    mime = {"PNG": "image/png", "WEBP": "image/webp", "JPEG": "image/jpeg"}[kind]
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode()


def box_mask(width: int, height: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Black with a white rectangle (x0, y0, x1, y1): the midjourney-proxy mask convention."""
    mask = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    return mask


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real S3 server (SeaweedFS) for the whole session; tests use their own keys or prefixes.
    A test that stops its server starts a `tests.seaweed.Seaweed` of its own instead."""
    from tests.seaweed import Seaweed

    server = Seaweed(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()
