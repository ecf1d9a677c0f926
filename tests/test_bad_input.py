"""Hostile and broken requests get a specific 4xx in the dialect's own envelope: never a 5xx, never a
traceback in the log, never a charge."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TestClient
from tests.servers import Server

JSON = {"content-type": "application/json"}
DEEP = b"[" * 5000 + b"]" * 5000
HUGE_INT = b"1" + b"0" * 23  # 1e23 written as digits: beyond 64 bits


def _envelope(path: str, answer: httpx.Response) -> str:
    """The error message, after checking the body is in the envelope of the dialect that owns `path`."""
    body = answer.json()
    if path.startswith("/mj"):
        assert set(body) == {"code", "description", "result", "properties"}, body
        assert body["code"] != 9, body  # journeyd's own failure
        # 3 (unknown task) makes new-api disable the channel: only a task id it does not know may get it
        assert body["code"] != 3 or "task" in body["description"], body
        return body["description"]
    if path.startswith("/api/v1/midjourney"):
        assert body["success"] is False, body
        return body["error"]
    assert body["code"] == answer.status_code, body
    return body["error"]["message"]


IMAGINE, MJ_IMAGINE, MMJ = "/v1/midjourney/generations", "/mj/submit/imagine", "/api/v1/midjourney"
CASES = [  # method, path, body, status, words in the message
    pytest.param("GET", "/v1/tasks/%C2%B3", None, 404, "not found", id="superscript digit id"),
    pytest.param("GET", "/mj/task/9999999999999999999/fetch", None, 404, "not found", id="id beyond 64 bits"),
    pytest.param("POST", "/mj/task/list-by-condition", b'{"ids": [1e400]}', 400, "json", id="ids beyond doubles"),
    pytest.param("POST", IMAGINE, b'{"prompt":"a","metadata":%s}' % HUGE_INT, 400, "64 bits", id="huge int metadata"),
    pytest.param("POST", IMAGINE, b'{"prompt":"a","metadata":%s}' % DEEP[4700:5300], 400, "deep", id="deep metadata"),
    pytest.param("POST", IMAGINE, b'{"prompt":"a \\ud800 b"}', 400, "surrogate", id="lone surrogate in prompt"),
    pytest.param(
        "POST", MJ_IMAGINE, b'{"prompt":"a","state":"\\udfff"}', 400, "surrogate", id="lone surrogate in state"
    ),
    pytest.param("POST", f"{MMJ}/imagine", b'{"prompt":"a","ref":"\\ud800"}', 400, "surrogate", id="surrogate in ref"),
    pytest.param("POST", IMAGINE, b'{"prompt":"a --seed %s"}' % (b"9" * 5000), 400, "--seed", id="seed of 5000 digits"),
    pytest.param(
        "POST", IMAGINE, b'{"prompt":"a","seed":%s}' % (b"9" * 5000), 400, "json", id="seed field of 5000 digits"
    ),
    pytest.param("POST", IMAGINE, b'{"prompt":"\xff\xfe"}', 400, "utf-8", id="invalid UTF-8"),
    pytest.param("POST", MJ_IMAGINE, DEEP, 400, "depth", id="deeply nested JSON"),
    pytest.param("POST", f"{MMJ}/button", DEEP, 400, "depth", id="deeply nested JSON, mymidjourney"),
    pytest.param("POST", "/mj/submit/action", b"taskId=1&customId=2", 400, "json", id="not JSON at all"),
    pytest.param("GET", "/v1/nothing/here", None, 404, "no such endpoint", id="unknown path, apimart"),
    pytest.param("POST", "/mj/submit/nothing", b"{}", 404, "no such endpoint", id="unknown path, /mj"),
    pytest.param("GET", "/mj-fast/mj/nothing", None, 404, "no such endpoint", id="unknown path, speed prefix"),
    pytest.param("GET", f"{MMJ}/nothing", None, 404, "no such endpoint", id="unknown path, mymidjourney"),
    pytest.param("GET", MJ_IMAGINE, None, 405, "post", id="wrong method"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "needle"), CASES)
def test_bad_input_gets_a_specific_4xx_in_the_dialects_envelope(
    client: TestClient,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    needle: str,
) -> None:
    with caplog.at_level(logging.WARNING):
        answer = client.request(method, path, content=body, headers=JSON if body is not None else {})
    assert answer.status_code == status, answer.text
    assert needle.lower() in _envelope(path, answer).lower(), answer.text
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], "a traceback was logged"


def test_the_same_input_without_a_key_is_refused_the_same_way_once_keys_exist(
    client: TestClient,
    runtime,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    from journeyd.domain.keys import ApiKey, hash_secret

    runtime.store.create_key(ApiKey("K1", "sk-aaaaa", "", 10, 0), hash_secret("sk-aaaaa-secret"))
    with caplog.at_level(logging.WARNING):
        for body in (b'{"prompt":"\xff"}', DEEP):
            answer = client.post("/mj/submit/imagine", content=body, headers=JSON)
            assert answer.status_code == 400, answer.text
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_wrong_method_names_the_allowed_one(client: TestClient) -> None:
    answer = client.get("/v1/midjourney/generations/upscale")
    assert answer.status_code == 405 and answer.headers["allow"] == "POST", answer.text


# --- over HTTP: what only a real server shows ------------------------------------------------------------
def _reply(sock: socket.socket) -> bytes:
    """One whole HTTP response (headers and its Content-Length of body), or what came before EOF."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            return int(value)
    return 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("bad-input") / "data"
    env = {"JOURNEYD_MAX_REQUEST_BYTES": str(1 << 20), "JOURNEYD_READ_TIMEOUT_S": "1", "JOURNEYD_WORKERS": "0"}
    server = Server(data, env=env).start()
    yield server
    server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log, log


def test_a_chunked_body_over_the_limit_is_refused_as_it_crosses_the_limit(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /v1/midjourney/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"a" * 65536
        for _ in range(24):  # 1.5 MiB against a 1 MiB limit, and the body never ends
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        reply = _reply(sock)
    # 413 at once: a server that waited for the end of the body would answer 408 after its 1 s timeout
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"over 1 MiB" in reply


def test_a_content_length_over_the_limit_is_refused_unread(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.post("/mj/submit/imagine", content=b"x" * (2 << 20), headers=JSON)
    assert answer.status_code == 413 and answer.json()["code"] == 4, answer.text


def test_a_body_that_stops_arriving_gets_408(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /mj/submit/imagine HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"prompt": '
        )
        started = time.monotonic()
        reply = _reply(sock)
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b'"code":4' in reply and b"did not arrive in time" in reply
    assert time.monotonic() - started < 8  # answered after the 1 s timeout, not left hanging


def test_a_content_length_that_is_not_a_number_is_400(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/midjourney/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1e3\r\n\r\n")
        reply = _reply(sock)
    assert reply.split(b" ", 2)[1] == b"400", reply


def test_nothing_was_queued_by_any_of_it(server: Server, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/mj/task/list").json() == []
