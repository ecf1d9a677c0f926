"""An API node (`journeyd serve --workers 0`) of a GPU fleet runs on a CPU box: it checks prompts against the
same model profiles as its workers, but never loads (or even reads) a model, and says so on /healthz and /readyz.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from journeyd.clock import ManualClock
from journeyd.domain.errors import InvalidRequest
from journeyd.domain.prompt import parse_prompt
from journeyd.engines import load_engines
from journeyd.runtime import build_runtime
from tests.conftest import LOOPBACK, TestClient, create_app, make_settings, png_data_url

PROFILES = """
[[profile]]
name = "sdxl"
model = "{first}"
versions = ["7", "6.1"]
size = 64
steps = 2

[[profile]]
name = "anime"
model = "{second}"
versions = ["niji6"]
size = 64
steps = 2
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def models_file(tmp_path: Path, first: str | Path, second: str | Path) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(PROFILES.format(first=first, second=second))
    return path


@pytest.fixture
def absent_models(tmp_path: Path) -> Path:
    """Profiles whose models are on the GPU boxes, not here (nor is their family written down)."""
    return models_file(tmp_path, "/gpu-box/models/base", "/gpu-box/models/anime.safetensors")


def submit(client: TestClient, prompt: str) -> tuple[int, str]:
    """(HTTP status, the refusal's message or "") of an apimart imagine."""
    answer = client.post("/v1/midjourney/generations", json={"prompt": prompt})
    return answer.status_code, answer.json().get("error", {}).get("message", "")


def test_an_api_node_starts_without_its_models_and_checks_prompts_against_their_profiles(
    tmp_path: Path, clock: ManualClock, absent_models: Path
) -> None:
    runtime = build_runtime(make_settings(tmp_path, engine="diffusers", models=str(absent_models)), clock=clock)
    assert not runtime.loaded
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        for prompt in ("a tower --v 7", "a tower --v 6.1", "a tower --niji 6", "a tower"):
            assert submit(client, prompt) == (200, ""), prompt
        assert submit(client, "a tower --v 5") == (
            400,
            "--v 5: no model is configured for version 5; this server serves 6.1, 7, niji6 (or leave the version out)",
        )
        assert client.get("/healthz").json() == {"ok": True, "engine": "diffusers (not loaded: API node)"}
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["engine"] == {"ok": True, "name": "diffusers", "loaded": False, "devices": 0}
    assert len(runtime.store.list_tasks(None, limit=10)) == 4
    runtime.store.close()


def test_an_api_node_accepts_and_refuses_exactly_what_a_worker_on_the_same_settings_does(
    tmp_path: Path, clock: ManualClock
) -> None:
    from tests.tiny_models import tiny_sd15

    base, anime = tiny_sd15(tmp_path / "base"), tiny_sd15(tmp_path / "anime")
    settings = make_settings(
        tmp_path, engine="diffusers", models=str(models_file(tmp_path, base, anime)), device="cpu", dtype="float32"
    )
    (worker,) = load_engines(settings)  # a GPU box: it loads both models
    for folder in (base, anime):
        folder.rename(folder.with_name(folder.name + "-on-the-gpu-box"))  # the API node's box has no model files
    runtime = build_runtime(settings, clock=clock)
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        for prompt in (
            "a tower",
            "a tower --v 7",
            "a tower --v 6.1",
            "a tower --niji 6",
            "a tower --v 6",
            "x --niji 5",
        ):
            try:
                worker.check(parse_prompt(prompt))
                expected = (200, "")
            except InvalidRequest as refusal:
                expected = (400, refusal.message)
            assert submit(client, prompt) == expected, prompt
        # what these profiles cannot do at all is refused at submit too, not left to fail on a worker
        pictures = [png_data_url(np.full((64, 64, 3), shade, np.uint8)) for shade in (40, 200)]
        for path, body, reason in (
            ("/mj/submit/blend", {"base64Array": pictures}, "no IP-Adapter"),
            ("/mj/submit/describe", {"base64": pictures[0]}, "no captioning model"),
        ):
            answer = client.post(path, json=body)
            assert answer.status_code == 400 and reason in answer.json()["description"], answer.text
    runtime.store.close()


def test_an_api_node_imports_no_torch(tmp_path: Path, absent_models: Path) -> None:
    script = f"""
import sys
from journeyd.domain.errors import InvalidRequest
from journeyd.runtime import build_runtime
from journeyd.config import Settings
from journeyd.service import Caller

settings = Settings(data_dir={str(tmp_path / "data")!r}, workers=0, engine="diffusers", models={str(absent_models)!r})
runtime = build_runtime(settings)
runtime.service.imagine(Caller(), "a tower --niji 6")
try:
    runtime.service.imagine(Caller(), "a tower --v 5")
except InvalidRequest:
    pass
print(sorted({{"torch", "diffusers", "transformers", "safetensors"}} & set(sys.modules)))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().replace("'", '"')) == []


def test_a_node_with_worker_threads_still_loads_its_models_at_start_up(
    tmp_path: Path, clock: ManualClock, absent_models: Path
) -> None:
    settings = make_settings(tmp_path, engine="diffusers", models=str(absent_models), workers=1)
    with pytest.raises(Exception, match="/gpu-box/models/base"):
        build_runtime(settings, clock=clock)
