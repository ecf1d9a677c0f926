"""SafeFetcher against a real HTTP server on loopback: decoding, SSRF rules, pinning, limits, deadlines."""

from __future__ import annotations

import base64
import contextlib
import io
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from journeyd.domain.errors import InvalidRequest, JourneydError, TooLarge, Unprocessable
from journeyd.media.fetch import SafeFetcher

TIMEOUT_S = 0.5
MAX_BYTES = 16 * 1024
HUGE = 4 * MAX_BYTES
NAME = "images.example.test"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


# -- a real HTTP server on loopback ---------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stop = threading.Event()  # wakes slow handlers at teardown
        self.hosts_seen: list[str | None] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hang up on purpose (limits, deadlines); that is not worth a traceback."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # the fetcher hangs up early on purpose
            super().handle()

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, data: bytes, every_s: float = 0.1) -> None:
        for i in range(len(data)):
            if self.server.stop.wait(every_s):
                return
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/image.png":
            self._send(200, PNG, Content_Type="image/png")
        elif path == "/host":
            self.server.hosts_seen.append(self.headers.get("Host"))
            self._send(200, PNG, Content_Type="image/png")
        elif path == "/redirect":
            self._send(302, Location="/image.png")
        elif path == "/missing":
            self._send(404, b"no such image")
        elif path == "/empty":
            self._send(200, b"")
        elif path == "/huge":
            self._send(200, b"\0" * HUGE)
        elif path == "/huge-declared":  # announces a huge body, then sends nothing
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            self.wfile.flush()
            self.server.stop.wait(5)
        elif path == "/huge-unsized":  # HTTP/1.0, no Content-Length: the body ends when we close
            self.send_response(200)
            self.end_headers()
            for _ in range(HUGE // 1024):
                self.wfile.write(b"\0" * 1024)
        elif path == "/slow":
            if not self.server.stop.wait(3):
                self._send(200, PNG)
        elif path == "/trickle-body":  # each byte arrives well inside the read timeout
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.flush()
            self._trickle(b"x" * 100)
        elif path == "/trickle-headers":
            self._trickle(b"HTTP/1.0 200 OK\r\nX-Padding: " + b"x" * 100)
        else:
            self._send(500, b"unknown test route")


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _resolver(table: dict[str, list[str]], calls: list[tuple[str, int]] | None = None) -> Callable:
    """A DNS stub: no real lookups in tests, and a record of what was asked."""

    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append((host, port))
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


def _no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolver must not be called (asked for {host}:{port})")


@pytest.fixture
def loopback() -> SafeFetcher:
    """A fetcher allowed to reach the test server (private address, random port)."""
    return SafeFetcher(allow_private=True, allowed_ports=None, timeout_s=TIMEOUT_S, max_bytes=MAX_BYTES)


def _raises(exc_type: type[JourneydError], fn: Callable[[], object], *fragments: str) -> JourneydError:
    with pytest.raises(exc_type) as info:
        fn()
    err = info.value
    assert type(err) is exc_type, f"expected exactly {exc_type.__name__}, got {type(err).__name__}: {err}"
    for fragment in fragments:
        assert fragment in err.message, f"{fragment!r} not in {err.message!r}"
    return err


# -- inline data ----------------------------------------------------------------------------------------


def test_data_url_decodes_to_the_image() -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    data = SafeFetcher(resolver=_no_dns).fetch(url)
    assert data == PNG
    assert Image.open(io.BytesIO(data)).size == (8, 8)


def test_data_url_accepts_any_media_type_params_and_percent_encoding() -> None:
    fetcher = SafeFetcher(resolver=_no_dns)
    encoded = base64.b64encode(b"\xfb\xff\xfe").decode()  # "+//+" needs percent-encoding in a URL
    assert fetcher.fetch("DATA:application/octet-stream;name=m.png;BASE64," + encoded) == b"\xfb\xff\xfe"
    assert fetcher.fetch("data:;base64," + encoded.replace("+", "%2B").replace("/", "%2F")) == b"\xfb\xff\xfe"


def test_data_url_must_be_base64() -> None:
    _raises(InvalidRequest, lambda: SafeFetcher().fetch("data:text/plain,hello", what="mask"), "mask", "base64")
    _raises(InvalidRequest, lambda: SafeFetcher().fetch("data:image/png;base64", what="mask"), "mask")


def test_empty_data_url_is_unprocessable() -> None:
    _raises(Unprocessable, lambda: SafeFetcher().fetch("data:image/png;base64,", what="mask_url"), "mask_url")


def test_raw_base64_with_newlines() -> None:
    text = base64.encodebytes(PNG * 4).decode()  # MIME style: 76-character lines
    assert "\n" in text.strip()
    assert SafeFetcher().fetch(text) == PNG * 4
    assert SafeFetcher().fetch("  \r\n" + text.replace("\n", "\r\n") + "\t ") == PNG * 4


@pytest.mark.parametrize("payload", [b"hello", b"hell", PNG])
def test_raw_base64_without_padding(payload: bytes) -> None:
    assert SafeFetcher().fetch(base64.b64encode(payload).decode().rstrip("=")) == payload


def test_raw_base64_urlsafe_alphabet() -> None:
    payload = bytes(range(256))
    text = base64.urlsafe_b64encode(payload).decode()
    assert "-" in text and "_" in text
    assert SafeFetcher().fetch(text) == payload
    assert SafeFetcher().fetch(text.rstrip("=")) == payload


@pytest.mark.parametrize("text", ["not base64 at all!", "abcde", "ab=cd", "aGVs*bG8=", "héllo"])
def test_broken_base64_is_invalid(text: str) -> None:
    _raises(InvalidRequest, lambda: SafeFetcher().fetch(text, what="maskBase64"), "maskBase64", "not valid base64")


def test_base64_size_limit_is_exact() -> None:
    fetcher = SafeFetcher(max_bytes=1024)
    assert len(fetcher.fetch(base64.b64encode(b"\1" * 1024).decode())) == 1024
    _raises(TooLarge, lambda: fetcher.fetch(base64.b64encode(b"\1" * 1025).decode(), what="mask"), "mask")


def test_oversized_base64_is_refused_before_decoding() -> None:
    # The invalid tail would make decoding fail with InvalidRequest: TooLarge proves we never got that far.
    fetcher = SafeFetcher(max_bytes=1024)
    huge = "A" * 10_000_000 + "!!"
    _raises(TooLarge, lambda: fetcher.fetch(huge, what="mask"), "mask", "limit")
    _raises(TooLarge, lambda: fetcher.fetch("data:image/png;base64," + huge, what="mask"), "mask")
    _raises(TooLarge, lambda: fetcher.fetch("data:image/png;base64,%41" * 2000 + huge, what="mask"), "mask")


def test_whitespace_does_not_count_towards_the_limit() -> None:
    text = "\n".join(["QUFB"] * 300)  # 900 bytes, 1499 characters
    assert SafeFetcher(max_bytes=900).fetch(text) == b"AAA" * 300


# -- what is refused before any network -----------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    ["ftp://example.com/m.png", "file:///etc/passwd", "javascript:alert(1)", "gopher://x/", "C:\\m.png"],
)
def test_unsupported_schemes(source: str) -> None:
    err = _raises(InvalidRequest, lambda: SafeFetcher(resolver=_no_dns).fetch(source, what="image_urls[0]"))
    assert "image_urls[0]" in err.message and "scheme" in err.message


@pytest.mark.parametrize("source", ["", "   \n ", None, b"aGVsbG8=", 42, ["http://x"]])
def test_empty_or_not_a_string(source: Any) -> None:
    _raises(InvalidRequest, lambda: SafeFetcher(resolver=_no_dns).fetch(source, what="mask_url"), "mask_url")


def test_userinfo_is_refused_without_echoing_the_password() -> None:
    fetcher = SafeFetcher(resolver=_no_dns)
    err = _raises(InvalidRequest, lambda: fetcher.fetch("https://bob:hunter2@example.com/m.png"), "mask_url")
    assert "credentials" in err.message and "hunter2" not in err.message


@pytest.mark.parametrize("url", ["http://example.com:22/m.png", "https://example.com:6379/", "http://[::1]:25/"])
def test_port_not_allowed(url: str) -> None:
    fetcher = SafeFetcher(resolver=_no_dns)
    _raises(InvalidRequest, lambda: fetcher.fetch(url, what="mask_url"), "mask_url", "port", "443")


def test_allowed_ports_none_still_rejects_impossible_ports() -> None:
    fetcher = SafeFetcher(allowed_ports=None, resolver=_no_dns)
    _raises(InvalidRequest, lambda: fetcher.fetch("http://example.com:70000/"), "mask_url", "port")


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1/m.png", "loopback"),
        ("http://localhost/m.png", "loopback"),
        ("http://[::1]/m.png", "loopback"),
        ("http://10.0.0.1/m.png", "private"),
        ("http://192.168.1.20:8080/m.png", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::ffff:127.0.0.1]/m.png", "loopback"),
        ("http://[::ffff:10.1.2.3]/m.png", "private"),
        ("http://100.64.0.1/m.png", "carrier-grade NAT"),
        ("http://[fd12:3456::1]/m.png", "unique-local"),
        ("http://[fe80::1]/m.png", "link-local"),
        ("http://0.0.0.0/m.png", "unspecified"),
        ("http://224.0.0.1/m.png", "multicast"),
        ("http://2130706433/m.png", "loopback"),  # decimal 127.0.0.1
        ("http://0x7f.1/m.png", "loopback"),
        ("http://127.1/m.png", "loopback"),
    ],
)
def test_default_settings_refuse_non_public_addresses(url: str, kind: str) -> None:
    fetcher = SafeFetcher(resolver=_resolver({"localhost": ["127.0.0.1", "::1"]}))
    err = _raises(Unprocessable, lambda: fetcher.fetch(url, what="mask_url"), "mask_url", kind)
    assert "JOURNEYD_ALLOW_PRIVATE_URLS" in err.message
    assert err.status == 422


def test_dns_pointing_at_private_space_is_refused() -> None:
    calls: list[tuple[str, int]] = []
    fetcher = SafeFetcher(resolver=_resolver({NAME: ["127.0.0.1"]}, calls))
    _raises(Unprocessable, lambda: fetcher.fetch(f"https://{NAME}/m.png"), "mask_url", NAME, "127.0.0.1")
    assert calls == [(NAME, 443)]


def test_one_private_record_among_public_ones_is_refused() -> None:
    fetcher = SafeFetcher(resolver=_resolver({NAME: ["8.8.8.8", "10.0.0.7"]}))
    _raises(Unprocessable, lambda: fetcher.fetch(f"http://{NAME}/m.png", what="image_urls[2]"), "10.0.0.7")


def test_resolution_failure_is_unprocessable() -> None:
    fetcher = SafeFetcher(resolver=_resolver({}))
    _raises(Unprocessable, lambda: fetcher.fetch("http://nowhere.example.test/m.png"), "mask_url", "resolve")
    empty = SafeFetcher(resolver=_resolver({NAME: []}))
    _raises(Unprocessable, lambda: empty.fetch(f"http://{NAME}/m.png"), "mask_url", "resolve")


# -- real downloads from loopback ------------------------------------------------------------------------


def test_download_from_loopback_when_private_is_allowed(server: _Server, loopback: SafeFetcher) -> None:
    assert loopback.fetch(server.url("/image.png"), what="image_urls[0]") == PNG


def test_pinned_connect_sends_the_original_host(server: _Server) -> None:
    calls: list[tuple[str, int]] = []
    fetcher = SafeFetcher(
        allow_private=True,
        allowed_ports=None,
        timeout_s=TIMEOUT_S,
        resolver=_resolver({NAME: ["127.0.0.1"]}, calls),
    )
    assert fetcher.fetch(server.url("/host", host=NAME)) == PNG
    assert calls == [(NAME, server.port)]  # resolved exactly once
    assert server.hosts_seen[-1] == f"{NAME}:{server.port}"


def test_next_checked_address_is_tried_when_the_first_refuses(server: _Server) -> None:
    # Linux answers every 127/8 address; nothing listens on 127.0.0.2, so that connect is refused.
    resolver = _resolver({NAME: ["127.0.0.2", "127.0.0.1"]})
    fetcher = SafeFetcher(allow_private=True, allowed_ports=None, timeout_s=TIMEOUT_S, resolver=resolver)
    assert fetcher.fetch(server.url("/image.png", host=NAME)) == PNG


def test_connection_refused_is_unprocessable(loopback: SafeFetcher) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the fetch: nothing listens there
    _raises(Unprocessable, lambda: loopback.fetch(f"http://127.0.0.1:{port}/m.png"), "mask_url", "reached")


def test_redirect_is_not_followed(server: _Server, loopback: SafeFetcher) -> None:
    _raises(
        Unprocessable,
        lambda: loopback.fetch(server.url("/redirect"), what="image_urls[1]"),
        "image_urls[1]",
        "redirected to /image.png",
        "final URL",
    )


def test_not_found_is_unprocessable(server: _Server, loopback: SafeFetcher) -> None:
    err = _raises(Unprocessable, lambda: loopback.fetch(server.url("/missing")), "mask_url", "404")
    assert err.status == 422


def test_empty_body_is_unprocessable(server: _Server, loopback: SafeFetcher) -> None:
    _raises(Unprocessable, lambda: loopback.fetch(server.url("/empty")), "mask_url", "empty")


@pytest.mark.parametrize("path", ["/huge", "/huge-declared", "/huge-unsized"])
def test_huge_body_is_too_large(server: _Server, loopback: SafeFetcher, path: str) -> None:
    started = time.monotonic()
    err = _raises(TooLarge, lambda: loopback.fetch(server.url(path), what="mask_url"), "mask_url", "limit")
    assert err.status == 413
    assert time.monotonic() - started < TIMEOUT_S  # refused on the size, not by waiting for the deadline


@pytest.mark.parametrize("path", ["/slow", "/trickle-body", "/trickle-headers"])
def test_slow_servers_hit_one_overall_deadline(server: _Server, loopback: SafeFetcher, path: str) -> None:
    started = time.monotonic()
    _raises(Unprocessable, lambda: loopback.fetch(server.url(path), what="mask_url"), "mask_url", "did not answer")
    assert time.monotonic() - started < TIMEOUT_S + 0.5


# -- TLS: SNI and certificate checks use the hostname, not the pinned IP ---------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_Server, list[str | None]]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    workdir: Path = tmp_path_factory.mktemp("tls")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    command = ["openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", f"/CN={NAME}"]
    command += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-keyout", str(key), "-out", str(cert), "-addext", f"subjectAltName=DNS:{NAME}"]
    subprocess.run(command, check=True, capture_output=True)
    names: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    srv = _Server()
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv, names
    srv.stop.set()
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def test_https_uses_the_hostname_for_sni_and_verification(
    tls_server: tuple[_Server, list[str | None]],
) -> None:
    srv, names = tls_server
    resolver = _resolver({NAME: ["127.0.0.1"]})
    fetcher = SafeFetcher(allow_private=True, allowed_ports=None, timeout_s=2.0, resolver=resolver)
    # The self-signed certificate is not trusted, so the fetch fails, but only after the handshake
    # offered the real hostname: SNI and verification were not done against the pinned IP.
    _raises(Unprocessable, lambda: fetcher.fetch(f"https://{NAME}:{srv.port}/image.png"), "mask_url")
    assert names == [NAME]
