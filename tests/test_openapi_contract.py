"""The OpenAPI document tells the truth: schemathesis drives every operation of a real server over HTTP,
with and without a key, and stateful along the document's links (imagine -> poll -> U1 -> modal ...).

Every answer must be documented (status, content type, schema), nothing may be a 5xx, malformed data
must be refused and unsupported methods answered 405. Only "schema-valid data is accepted" is left
out: a prompt such as "--ar 0:0" is a valid string and still a 400.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from journeyd.runtime import build_runtime
from tests.conftest import create_app, make_settings
from tests.servers import Server, journeyd

ENV = {
    "JOURNEYD_CLASSIC_SIZE": "64",  # tasks finish quickly, so links reach finished tasks and their buttons
    "JOURNEYD_WORKERS": "1",
    "JOURNEYD_MAX_QUEUED_PER_KEY": "0",
    "JOURNEYD_PRICES": json.dumps({"midjourney@imagine": 1, "midjourney@modal": 1}),
}
# A stream that never ends cannot be fuzzed request by request: tests/test_events_api.py covers it.
UNBOUNDED = ("mj_task_events",)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    data = tmp_path_factory.mktemp("openapi") / "data"
    secret = journeyd("keys", "create", "--credits", "1000000", env={"JOURNEYD_DATA_DIR": str(data)}).stdout.strip()
    server = Server(data, env=ENV).start()
    yield server, secret
    server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log, log[-5000:]


def _schemathesis(server: Server, cwd: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--phases",
            "coverage,fuzzing,stateful",
            "--seed",
            "20261201",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--no-color",
            *(f"--exclude-operation-id={operation}" for operation in UNBOUNDED),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=cwd,
    )


def _passed(run: subprocess.CompletedProcess[str]) -> None:
    assert run.returncode == 0, run.stdout[-15000:] + run.stderr[-3000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", run.stdout)
    tested = re.search(r"Tested: (\d+)", run.stdout)
    assert selected and tested, run.stdout[-3000:]
    chosen, every = int(selected.group(1)), int(selected.group(2))
    assert chosen == int(tested.group(1)) and every - chosen == len(UNBOUNDED), run.stdout[-3000:]


def test_every_operation_with_a_key_conforms_and_never_fails(keyed_server: tuple[Server, str], tmp_path: Path) -> None:
    server, secret = keyed_server
    _passed(_schemathesis(server, tmp_path, "--header", f"Authorization: Bearer {secret}", "--max-examples", "15"))


def test_every_operation_without_a_key_is_refused_as_documented(
    keyed_server: tuple[Server, str], tmp_path: Path
) -> None:
    server, _ = keyed_server
    _passed(_schemathesis(server, tmp_path, "--max-examples", "5"))


def test_the_document_declares_keys_real_statuses_and_the_idempotency_header(tmp_path: Path) -> None:
    runtime = build_runtime(make_settings(tmp_path))
    document = create_app(runtime, manage_runtime=False).openapi()
    runtime.store.close()
    assert set(document["components"]["securitySchemes"]) == {"bearer", "mjApiSecret"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            name, responses = f"{method.upper()} {path}", operation["responses"]
            assert "400" in responses, name  # a bad Host, if nothing else
            if path.startswith(("/v1/", "/mj/", "/api/")):
                assert operation["security"] and {"401", "403"} <= set(responses), name
            if "200" in responses and ("/submit/" in path or "/generations" in path or path.endswith("/button")):
                assert "Idempotency-Key" in {p["name"] for p in operation.get("parameters", [])}, name
                assert {"402", "409", "429"} <= set(responses), name
