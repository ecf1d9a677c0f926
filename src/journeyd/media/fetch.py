"""Fetch client-supplied image references (``mask_url``, ``image_urls``) without becoming an SSRF proxy.

A reference is a ``data:`` URL, an ``http(s)://`` URL or raw base64. URLs are resolved once, every address
must be public (unless private addresses are explicitly allowed), and the connection goes to the checked IP
itself so DNS cannot change its answer between the check and the connect. Redirects are never followed,
bodies are capped while streaming, and one deadline bounds the whole download.

Every failure is a :mod:`journeyd.domain.errors` error whose message names the offending field.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeAlias
from urllib.parse import unquote_to_bytes

import httpcore
import httpx

from journeyd.domain.errors import InvalidRequest, TooLarge, Unprocessable

__all__ = ["DEFAULT_ALLOWED_PORTS", "Posted", "Resolver", "SafeFetcher", "system_resolver"]

Resolver: TypeAlias = Callable[[str, int], list[str]]
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_ALLOWED_PORTS: tuple[int, ...] = (80, 443, 8080, 8443)

_ACCEPTED = "send an http(s) URL, a data: URL, or the image bytes as base64"
_PRIVATE_HINT = "journeyd only fetches public addresses (set JOURNEYD_ALLOW_PRIVATE_URLS=1 to allow private ones)"
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
# Hosts the C resolver would read as a legacy IPv4 literal ("127.1", "0x7f.1", "2130706433").
_LEGACY_IPV4_RE = re.compile(r"^[0-9A-Fa-fXx.]+$")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
_WHITESPACE = " \t\r\n\f\v"
_MAX_SHOWN = 200

_SHARED_V4 = ipaddress.ip_network("100.64.0.0/10")
_LINK_LOCAL_V4 = ipaddress.ip_network("169.254.0.0/16")
_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_ULA_V6 = ipaddress.ip_network("fc00::/7")


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with the OS resolver; the default for :class:`SafeFetcher`."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Posted:
    """What a server answered a POST: its status and, if it asked us to slow down, Retry-After."""

    status: int
    retry_after: str | None = None


@dataclass(frozen=True)
class _Target:
    """A parsed http(s) URL: what we check, what we connect to, and what we show back."""

    url: httpx.URL
    host: str  # ASCII (IDNA) host, without brackets
    port: int
    literal: IPAddress | None  # set when the host is already an IP address
    shown: str  # the URL as the client sent it, shortened for messages

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.url.port is None else f"{host}:{self.url.port}"


class SafeFetcher:
    """Turns a client's image reference into bytes while refusing to reach private infrastructure.

    ``allow_private`` lifts the public-address rule (for self-hosters fetching from their LAN);
    ``allowed_ports=None`` allows every port. ``resolver`` exists so tests and embedders can control DNS.
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        timeout_s: float = 10.0,
        max_bytes: int = 16 * 1024 * 1024,
        allowed_ports: Collection[int] | None = DEFAULT_ALLOWED_PORTS,
        resolver: Resolver | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.allow_private = allow_private
        self.timeout_s = float(timeout_s)
        self.max_bytes = int(max_bytes)
        self.allowed_ports: frozenset[int] | None = None if allowed_ports is None else frozenset(allowed_ports)
        self.resolver: Resolver = resolver or system_resolver

    def fetch(self, source: str, *, what: str = "mask_url") -> bytes:
        """Return the bytes ``source`` refers to; ``what`` names the request field in error messages."""
        if not isinstance(source, str):
            raise InvalidRequest(f"{what} must be a string ({_ACCEPTED}), got {type(source).__name__}")
        text = source.strip()
        if not text:
            raise InvalidRequest(f"{what} is empty; {_ACCEPTED}")
        match = _SCHEME_RE.match(text)
        if match is None:  # base64 never contains ':', so anything scheme-less is meant as base64
            return self._decode_base64(text, what=what, label="base64")
        scheme = match.group(1).lower()
        if scheme == "data":
            return self._decode_data_url(text, what=what)
        if scheme in ("http", "https"):
            return self._fetch_url(text, what=what)
        raise InvalidRequest(f"{what} uses the unsupported scheme {_shorten(scheme, 20)}:; {_ACCEPTED}")

    # -- inline data ---------------------------------------------------------------------------------

    def _decode_data_url(self, text: str, *, what: str) -> bytes:
        header, comma, payload = text[len("data:") :].partition(",")
        if not comma:
            raise InvalidRequest(f"{what} is a data: URL without a comma; use data:<type>;base64,<data>")
        params = [p.strip().lower() for p in header.split(";")]
        if params[-1] != "base64":
            raise InvalidRequest(f"{what} is a data: URL that is not base64-encoded; use data:<type>;base64,<data>")
        if "%" in payload:  # RFC 2397 data may be percent-encoded (%2B, %2F, %3D)
            if len(payload) // 3 > self.max_bytes * 4 // 3 + 4:  # an encoded character is 3 at most
                raise TooLarge(f"{what} is over the {_size(self.max_bytes)} limit", limit_bytes=self.max_bytes)
            try:
                payload = unquote_to_bytes(payload).decode("ascii")
            except UnicodeDecodeError:
                raise InvalidRequest(f"{what} is not valid base64 (data: URL payload is not ASCII)") from None
        return self._decode_base64(payload, what=what, label="data: URL")

    def _check_base64_size(self, text: str, *, what: str) -> None:
        """Estimate the decoded size without copying or decoding, so a huge string is refused cheaply."""
        significant = len(text) - sum(text.count(c) for c in _WHITESPACE) - text.count("=")
        estimate = significant * 3 // 4
        if estimate > self.max_bytes:
            raise TooLarge(
                f"{what} decodes to about {_size(estimate)}, over the {_size(self.max_bytes)} limit",
                limit_bytes=self.max_bytes,
            )

    def _decode_base64(self, text: str, *, what: str, label: str) -> bytes:
        """Decode standard or URL-safe base64, tolerating whitespace and missing padding."""
        self._check_base64_size(text, what=what)
        compact = "".join(text.split()).rstrip("=").translate(_URLSAFE_TO_STANDARD)
        if len(compact) % 4 == 1:
            raise InvalidRequest(f"{what} is not valid base64 (its length is impossible); {_ACCEPTED}")
        compact += "=" * (-len(compact) % 4)
        try:
            data = base64.b64decode(compact.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error, ValueError):
            raise InvalidRequest(
                f"{what} is not valid base64 (unexpected characters); {_ACCEPTED} (URLs start with https://)"
            ) from None
        if not data:
            raise Unprocessable(f"{what} is an empty {label}; it decodes to no bytes")
        if len(data) > self.max_bytes:  # the estimate is exact for valid input; keep the hard check anyway
            raise TooLarge(f"{what} is {_size(len(data))}, over the {_size(self.max_bytes)} limit")
        return data

    # -- URLs ----------------------------------------------------------------------------------------

    def _fetch_url(self, text: str, *, what: str) -> bytes:
        target = self._parse_url(text, what=what)
        addresses = self._resolve(target, what=what)
        deadline = time.monotonic() + self.timeout_s
        failure: httpx.ConnectError | None = None
        for address in addresses:  # pinned: only ever the addresses checked above
            try:
                return self._download(target, address, deadline, what=what)
            except httpx.ConnectError as exc:  # refused or unreachable: the next checked address may work
                failure = exc
        raise Unprocessable(f"{what} ({target.shown}) could not be reached: {_reason(failure)}")

    def _parse_url(self, text: str, *, what: str) -> _Target:
        shown = _shorten(text, _MAX_SHOWN)
        try:
            url = httpx.URL(text)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise InvalidRequest(f"{what} is not a valid URL ({exc}): {shown}") from None
        if url.userinfo:
            raise InvalidRequest(
                f"{what} contains credentials (user:password@); journeyd does not send them, "
                "so give a URL that needs no login or send the image as base64"
            )
        host = url.raw_host.decode("ascii")
        if not host:
            raise InvalidRequest(f"{what} has no host: {shown}")
        port = url.port if url.port is not None else (443 if url.scheme == "https" else 80)
        if not 0 < port < 65536:
            raise InvalidRequest(f"{what} has an invalid port {port}: {shown}")
        if self.allowed_ports is not None and port not in self.allowed_ports:
            allowed = ", ".join(str(p) for p in sorted(self.allowed_ports)) or "none"
            raise InvalidRequest(f"{what} uses port {port}; journeyd only fetches from ports {allowed}")
        return _Target(url=url, host=host, port=port, literal=_ip_literal(host), shown=shown)

    def _resolve(self, target: _Target, *, what: str) -> list[IPAddress]:
        """Resolve once and check every answer, so a name with one private record is refused outright."""
        if target.literal is not None:
            legacy_form = ":" not in target.host and str(target.literal) != target.host  # "0x7f.1"
            self._check_public(target.literal, what=what, via=target.host if legacy_form else None)
            return [_unwrap(target.literal)]
        try:
            answers = list(self.resolver(target.host, target.port))
        except Exception as exc:  # any resolver failure means the same thing to the client
            raise Unprocessable(f"{what}: could not resolve host {target.host} ({_reason(exc)})") from None
        addresses: list[IPAddress] = []
        for answer in answers:
            try:
                address = ipaddress.ip_address(str(answer))
            except ValueError:
                raise Unprocessable(
                    f"{what}: host {target.host} resolved to {answer!r}, which is not an IP address"
                ) from None
            self._check_public(address, what=what, via=target.host)
            if _unwrap(address) not in addresses:
                addresses.append(_unwrap(address))
        if not addresses:
            raise Unprocessable(f"{what}: could not resolve host {target.host} (no addresses)")
        return addresses

    def _check_public(self, address: IPAddress, *, what: str, via: str | None) -> None:
        if self.allow_private:
            return
        kind = _non_public_kind(address)
        if kind is None:
            return
        inner = _unwrap(address)
        shown = str(address) if inner == address else f"{address} ({inner})"
        subject = what if via is None else f"{what} ({via})"
        raise Unprocessable(f"{subject} resolves to {shown}, {kind}; {_PRIVATE_HINT}", address=str(inner))

    # -- calling a URL we were given (webhooks) -----------------------------------------------------

    def check_url(self, url: str, *, what: str) -> None:
        """Refuse, now, a URL we are asked to call later: not http(s), a refused port, or a host that
        resolves to a private address. It is resolved and checked again on every call."""
        if not isinstance(url, str) or not url.strip():
            raise InvalidRequest(f"{what} must be an http(s) URL")
        match = _SCHEME_RE.match(url.strip())
        if match is None or match.group(1).lower() not in ("http", "https"):
            raise InvalidRequest(f"{what} must be an http(s) URL, got {_shorten(url, _MAX_SHOWN)}")
        self._resolve(self._parse_url(url.strip(), what=what), what=what)

    def post(self, url: str, body: bytes, headers: dict[str, str], *, what: str) -> Posted:
        """POST `body` to `url` under the same rules as a fetch: resolved once, every address public,
        the connection pinned to a checked address, no redirects, one deadline. Network failures are
        raised as Unprocessable; any HTTP answer, even an error, is returned."""
        target = self._parse_url(url.strip(), what=what)
        addresses = self._resolve(target, what=what)
        deadline = time.monotonic() + self.timeout_s
        failure: httpx.ConnectError | None = None
        for address in addresses:
            try:
                with self._client(deadline) as client:
                    response = client.post(
                        self._pinned(target, address),
                        content=body,
                        headers={**headers, **self._host(target)},
                        extensions=self._extensions(target),
                    )
                    return Posted(response.status_code, response.headers.get("retry-after"))
            except httpx.ConnectError as exc:
                failure = exc
                if time.monotonic() >= deadline:
                    raise Unprocessable(self._timeout_message(target, what)) from None
            except httpx.TimeoutException:
                raise Unprocessable(self._timeout_message(target, what)) from None
            except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError) as exc:
                raise Unprocessable(f"{what} ({target.shown}) could not be called: {_reason(exc)}") from None
        raise Unprocessable(f"{what} ({target.shown}) could not be reached: {_reason(failure)}")

    def _client(self, deadline: float) -> httpx.Client:
        return httpx.Client(
            transport=_DeadlineTransport(deadline, self._ssl_context),
            timeout=httpx.Timeout(self.timeout_s),
            follow_redirects=False,
            trust_env=False,
        )

    @staticmethod
    def _pinned(target: _Target, address: IPAddress) -> httpx.URL:
        return target.url.copy_with(host=str(address), port=target.port, fragment=None)

    @staticmethod
    def _host(target: _Target) -> dict[str, str]:
        return {"Host": target.host_header, "User-Agent": "journeyd"}

    @staticmethod
    def _extensions(target: _Target) -> dict[str, Any]:
        if target.url.scheme == "https" and target.literal is None:
            return {"sni_hostname": target.host}  # TLS SNI and certificate checks use the name
        return {}

    def _download(self, target: _Target, address: IPAddress, deadline: float, *, what: str) -> bytes:
        headers = {**self._host(target), "Accept": "image/*, */*;q=0.5", "Accept-Encoding": "identity"}
        try:
            with (
                self._client(deadline) as client,
                client.stream(
                    "GET", self._pinned(target, address), headers=headers, extensions=self._extensions(target)
                ) as response,
            ):
                self._check_response(response, target, what=what)
                return self._read_body(response, target, deadline, what=what)
        except httpx.TimeoutException:
            raise Unprocessable(self._timeout_message(target, what)) from None
        except httpx.ConnectError:
            if time.monotonic() >= deadline:
                raise Unprocessable(self._timeout_message(target, what)) from None
            raise
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError) as exc:
            raise Unprocessable(f"{what} ({target.shown}) could not be downloaded: {_reason(exc)}") from None

    def _check_response(self, response: httpx.Response, target: _Target, *, what: str) -> None:
        status = response.status_code
        if 300 <= status < 400:
            location = response.headers.get("location")
            if location:
                location = _shorten(location, _MAX_SHOWN)
                raise Unprocessable(f"{what} ({target.shown}) redirected to {location}; give the final URL")
            raise Unprocessable(
                f"{what} ({target.shown}) redirected (HTTP {status}) without a Location; give the final URL"
            )
        if not 200 <= status < 300:
            phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
            raise Unprocessable(f"{what} ({target.shown}) answered HTTP {status}{phrase}", status=status)
        declared = response.headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise TooLarge(
                f"{what} ({target.shown}) is {_size(int(declared))}, over the {_size(self.max_bytes)} limit",
                limit_bytes=self.max_bytes,
            )

    def _read_body(self, response: httpx.Response, target: _Target, deadline: float, *, what: str) -> bytes:
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > self.max_bytes:
                raise TooLarge(
                    f"{what} ({target.shown}) is larger than the {_size(self.max_bytes)} limit",
                    limit_bytes=self.max_bytes,
                )
            if time.monotonic() > deadline:
                raise Unprocessable(self._timeout_message(target, what))
        if not body:
            raise Unprocessable(f"{what} ({target.shown}) answered with an empty body")
        return bytes(body)

    @cached_property
    def _ssl_context(self) -> ssl.SSLContext:
        """Loading the CA bundle costs ~15 ms; do it once per fetcher, not once per download."""
        return httpx.create_ssl_context(trust_env=False)

    def _timeout_message(self, target: _Target, what: str) -> str:
        return f"{what} ({target.shown}) did not answer within {self.timeout_s:g} s"


# -- transport: httpx, with every socket operation clamped to one overall deadline -----------------------


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport, but no connect, TLS handshake, read or write may outlive ``deadline``.

    Per-operation timeouts alone let a server that trickles one byte just inside the read timeout keep us
    busy indefinitely (in the headers as well as the body); clamping each operation closes that.
    """

    def __init__(self, deadline: float, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=1,
            network_backend=_DeadlineBackend(deadline),
        )


def _remaining(deadline: float, timeout: float | None, error: type[Exception]) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("overall deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, deadline: float) -> None:
        self._inner = httpcore.SyncBackend()
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _remaining(self._deadline, timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not fetched")

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, self._deadline - time.monotonic())))


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _remaining(self._deadline, timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _remaining(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        timeout = _remaining(self._deadline, timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


# -- small helpers -------------------------------------------------------------------------------------


def _ip_literal(host: str) -> IPAddress | None:
    """The host as an IP address if it is one, including the legacy IPv4 forms the OS would accept."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4_RE.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _unwrap(address: IPAddress) -> IPAddress:
    """``::ffff:a.b.c.d`` is a.b.c.d on the wire; judge (and connect to) the IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _non_public_kind(address: IPAddress) -> str | None:
    """Describe why an address is not publicly routable, or None when it is."""
    address = _unwrap(address)
    if isinstance(address, ipaddress.IPv6Address) and address.sixtofour is not None:
        embedded = _non_public_kind(address.sixtofour)  # 6to4 embeds an IPv4 address too
        if embedded is not None:
            return f"a 6to4 address embedding {address.sixtofour}, {embedded}"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        if address in _LINK_LOCAL_V4:
            return "a link-local address (where cloud metadata services live)"
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address):
        if address in _SHARED_V4:
            return "a carrier-grade NAT (shared, RFC 6598) address"
        if any(address in net for net in _RFC1918):
            return "a private (RFC 1918) address"
    elif address in _ULA_V6:
        return "a unique-local (private) address"
    if address.is_reserved or address.is_private or not address.is_global:
        return "a reserved, non-public address"
    return None


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "no address answered"
    text = str(exc).strip() or type(exc).__name__
    return _shorten(text, _MAX_SHOWN)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"
