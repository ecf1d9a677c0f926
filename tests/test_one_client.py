"""One client cannot hurt the others: bounded lists, bounded image memory, slow connections closed,
Host names checked, and no driving journeyd from another site's page (DNS rebinding)."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from journeyd.api.origins import HostPolicy, host_name
from journeyd.runtime import build_runtime
from tests.conftest import LOOPBACK, TestClient, create_app, make_settings
from tests.servers import Server, journeyd


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("one-client") / "data"
    server = Server(data, env={"JOURNEYD_READ_TIMEOUT_S": "1", "JOURNEYD_WORKERS": "0"}).start()
    yield server
    server.stop()


def _rss_peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


# --- lists -----------------------------------------------------------------------------------------------
def test_list_by_condition_is_bounded_and_answers_a_full_batch_in_one_go(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        made = [client.post("/mj/submit/imagine", json={"prompt": f"a boat {i}"}).json()["result"] for i in range(3)]
        ids = [*made, *(str(1767225600000000 + i) for i in range(997))]  # 1000: the documented maximum
        listed = client.post("/mj/task/list-by-condition", json={"ids": ids})
        assert listed.status_code == 200 and [t["id"] for t in listed.json()] == made
        over = client.post("/mj/task/list-by-condition", json={"ids": [*ids, "1"]})
        assert over.status_code == 400 and "at most 1000" in over.json()["description"], over.text
        huge = client.post("/mj/task/list-by-condition", json={"ids": [str(10**15 + i) for i in range(1_800_000)]})
        assert huge.status_code == 413 and huge.json()["code"] == 4, huge.text[:200]
        assert client.get("/healthz").status_code == 200


# --- image memory ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def forty_megapixels() -> str:
    """A 40-megapixel RGBA PNG (160 MB once decoded, 160 KiB on the wire) as a data URL."""
    buffer = io.BytesIO()
    Image.new("RGBA", (8000, 5000), (10, 120, 200, 255)).save(buffer, "PNG", compress_level=9)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_image_prompts_are_bounded_per_request(server: Server, forty_megapixels: str) -> None:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        answer = client.post("/mj/submit/imagine", json={"prompt": "a sea", "base64Array": [forty_megapixels] * 5})
    assert answer.status_code == 413, answer.text
    assert "megapixels" in answer.json()["description"]


def test_concurrent_maximal_image_prompts_keep_memory_bounded(tmp_path: Path, forty_megapixels: str) -> None:
    server = Server(tmp_path / "data", env={"JOURNEYD_WORKERS": "0"}).start()
    try:
        assert server.process is not None
        with httpx.Client(base_url=server.url, timeout=300) as client:
            client.post("/mj/submit/imagine", json={"prompt": "warm up"})
            before = _rss_peak_mib(server.process.pid)
            answers: list[int] = []

            def submit() -> None:
                body = {"prompt": "a sea", "base64Array": [forty_megapixels]}
                answers.append(client.post("/mj/submit/imagine", json=body).status_code)

            threads = [threading.Thread(target=submit) for _ in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            peak = _rss_peak_mib(server.process.pid)
            tasks = client.get("/mj/task/list").json()
        assert answers == [200] * 6
        image_prompts = [t for t in tasks if t["prompt"] == "a sea"]
        assert len(image_prompts) == 6
        # One decode of such an image needs ~320 MB (Pillow premultiplies alpha while shrinking it): six at
        # once would take 2 GB, and an unshrunk one as much again. One at a time stays near a single one.
        assert peak - before < 500, f"peak RSS grew by {peak - before:.0f} MiB (from {before:.0f} MiB)"
    finally:
        server.stop()


# --- slow clients ----------------------------------------------------------------------------------------
def test_slow_and_silent_connections_are_closed_and_others_are_served(server: Server) -> None:
    sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    try:
        for i, sock in enumerate(sockets):
            if i % 2:  # half drip their headers, half say nothing at all
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        deadline = time.monotonic() + 10
        closed: set[int] = set()
        while len(closed) < len(sockets) and time.monotonic() < deadline:
            with httpx.Client(base_url=server.url, timeout=5) as client:
                assert client.get("/healthz").status_code == 200  # served all along
            for i, sock in enumerate(sockets):
                if i in closed:
                    continue
                if i % 2:
                    sock.sendall(b"X")  # one byte more: still not a full header line
                sock.settimeout(0.2)
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    data = b""
                assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
                closed.add(i)
        assert len(closed) == len(sockets), f"{len(sockets) - len(closed)} slow connections still open"
    finally:
        for sock in sockets:
            sock.close()


# --- Host names, origins -------------------------------------------------------------------------------
def test_the_host_policy() -> None:
    loopback_only = HostPolicy(bind="127.0.0.1")
    assert all(loopback_only.allows(n) for n in ("localhost", "127.0.0.1", "127.8.9.1", "::1", "app.localhost"))
    assert not any(loopback_only.allows(n) for n in ("evil.example", "192.168.1.20", "localhost.evil.example"))
    configured = HostPolicy(bind="0.0.0.0", public_url="https://img.example.com/jd", allowed=["*.lan", "box"])
    assert all(configured.allows(n) for n in ("img.example.com", "studio.lan", "box", "192.168.1.20", "::1"))
    assert not configured.allows("example.com") and not configured.allows("lan")
    assert HostPolicy(bind="127.0.0.1", allowed=["*"]).allows("anything.example")
    assert host_name("evil.example:666/x?") is None and host_name("[::1]:8080") == "::1"
    assert host_name("Example.COM:80") == "example.com"


def test_a_forged_host_never_reaches_image_urls(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for host in ("evil.example:666/x?", "evil.example:666", "", "a b"):
            answer = client.post("/v1/midjourney/generations", json={"prompt": "a fox"}, headers={"Host": host})
            assert answer.status_code == 400, (host, answer.text)
            assert "JOURNEYD_ALLOWED_HOSTS" in answer.json()["error"]["message"]
        fine = client.post("/v1/midjourney/generations", json={"prompt": "a fox"}, headers={"Host": "localhost:1"})
        assert fine.status_code == 200


def test_dns_rebinding_cannot_drive_a_keyless_server(server: Server) -> None:
    rebound = {"Host": f"evil.example:{server.port}", "Origin": f"http://evil.example:{server.port}"}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        before = len(client.get("/mj/task/list").json())
        answer = client.post("/v1/midjourney/generations", json={"prompt": "a fox"}, headers=rebound)
        assert answer.status_code == 400, answer.text
        # a page of another site calling the real loopback name without a key is refused too
        cross = client.post("/mj/submit/imagine", json={"prompt": "a fox"}, headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403 and cross.json()["code"] == 4, cross.text
        assert client.get("/healthz", headers={"Origin": "null"}).status_code == 403
        # journeyd's own pages (same origin) work, and CORS is off: no Access-Control headers
        own = client.post(
            "/mj/submit/imagine", json={"prompt": "a fox"}, headers={"Origin": f"http://127.0.0.1:{server.port}"}
        )
        assert own.status_code == 200 and "access-control-allow-origin" not in own.headers
        assert len(client.get("/mj/task/list").json()) == before + 1


def test_with_a_key_and_configured_origins_a_web_app_works(tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret = journeyd("keys", "create", env={"JOURNEYD_DATA_DIR": str(data)}).stdout.strip()
    env = {"JOURNEYD_CORS_ORIGINS": "https://app.example", "JOURNEYD_WORKERS": "0"}
    server = Server(data, env=env).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            preflight = client.options(
                "/v1/midjourney/generations",
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
                },
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "https://app.example"
            call = client.post(
                "/v1/midjourney/generations",
                json={"prompt": "a fox"},
                headers={"Origin": "https://app.example", "Authorization": f"Bearer {secret}"},
            )
            assert call.status_code == 200 and call.headers["access-control-allow-origin"] == "https://app.example"
            other = client.post(
                "/v1/midjourney/generations", json={"prompt": "a fox"}, headers={"Origin": "https://other.example"}
            )
            assert other.status_code == 403 and "access-control-allow-origin" not in other.headers
    finally:
        server.stop()


def test_the_public_url_is_a_host_name_journeyd_answers_to(tmp_path: Path) -> None:
    runtime = build_runtime(make_settings(tmp_path, public_url="https://images.example.org", allowed_hosts=None))
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        for host, status in (("images.example.org", 200), ("testserver", 400), ("evil.example", 400)):
            answer = client.post("/v1/midjourney/generations", json={"prompt": "a fox"}, headers={"Host": host})
            assert answer.status_code == status, (host, answer.text)
    runtime.store.close()
