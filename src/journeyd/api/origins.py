"""Which Host names journeyd answers to, and which browser pages may drive it.

DNS rebinding: a page on any site can point its own name at 127.0.0.1 and then call a server on
the user's machine as if it were same-origin (the hole Ollama closed in 2024). The browser still
sends the page's name as `Host`, so only the names the operator configured are served: loopback
names and addresses, the bind address, `JOURNEYD_PUBLIC_URL` and `JOURNEYD_ALLOWED_HOSTS`. An IP
literal cannot be rebound, so with a wildcard bind (0.0.0.0) any address is accepted as a Host.
On top of that, a cross-origin browser request that carries no API key is refused, and CORS stays
off unless origins are configured. The same check keeps a forged Host out of image URLs.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from journeyd.api.auth import KEY_HEADERS
from journeyd.domain.errors import Forbidden, InvalidRequest, JourneydError

_HOST = re.compile(
    r"^(?P<name>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::(?P<port>\d{1,5}))?$"
)
WILDCARD_BINDS = ("0.0.0.0", "::", "")
RAW_KEY_HEADERS = frozenset(name.encode() for name in KEY_HEADERS)


def host_name(value: str) -> str | None:
    """The name in a Host header (lower case, IPv6 without brackets), or None if it is not one."""
    match = _HOST.match(value.strip())
    return match.group("name").strip("[]").lower().rstrip(".") if match else None


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class HostPolicy:
    """The Host names this server answers to."""

    def __init__(self, *, bind: str, public_url: str | None = None, allowed: Iterable[str] = ()) -> None:
        self.any_host = False
        self.names: set[str] = set()
        self.suffixes: list[str] = []  # from "*.example.com"
        for entry in [*allowed, *([urlsplit(public_url).hostname or ""] if public_url else [])]:
            entry = entry.strip().lower()
            if entry == "*":
                self.any_host = True
            elif entry.startswith("*."):
                self.suffixes.append(entry[1:])
            elif entry:
                self.names.add(host_name(entry) or entry)
        self.any_address = bind.strip("[]") in WILDCARD_BINDS
        if not self.any_address:
            self.names.add(bind.strip("[]").lower())

    def allows(self, name: str) -> bool:
        if self.any_host or name in self.names or name == "localhost" or name.endswith(".localhost"):
            return True
        if any(name.endswith(suffix) for suffix in self.suffixes):
            return True
        address = _ip(name)
        return address is not None and (address.is_loopback or self.any_address)


class HostGuard:
    """Refuse unknown Host names, and cross-origin browser requests without a key, before any route."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        policy: HostPolicy,
        cors_origins: Iterable[str],
        render: Callable[[str, JourneydError], Response],
    ) -> None:
        self.app, self.policy, self.render = app, policy, render
        self.cors_origins = {origin.rstrip("/").lower() for origin in cors_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host, origin, keyed = b"", None, False
        for name, value in scope["headers"]:  # one pass over the raw headers: this runs on every poll
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name in RAW_KEY_HEADERS and value:
                keyed = True
        error = self._host_refusal(host)
        if error is None and origin is not None:
            error = self._origin_refusal(origin.decode("latin-1"), host.decode("latin-1"), keyed)
        if error is not None:
            await self.render(scope["path"], error)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one guard per app, and few Host values
    def _host_refusal(self, raw: bytes) -> JourneydError | None:
        host = raw.decode("latin-1")
        name = host_name(host)
        if name is not None and self.policy.allows(name):
            return None
        shown = host if len(host) <= 80 else host[:80] + "…"
        return InvalidRequest(
            f"Host {shown!r} is not a name this server answers to; its operator can add it to "
            "JOURNEYD_ALLOWED_HOSTS or set JOURNEYD_PUBLIC_URL"
        )

    def _origin_refusal(self, origin: str, host: str, keyed: bool) -> JourneydError | None:
        if keyed or origin.rstrip("/").lower() in self.cors_origins or self._same_origin(origin, host):
            return None
        return Forbidden(
            f"a page from {origin[:80]!r} may not use this server without an API key; send one, or have the "
            "operator add the page's origin to JOURNEYD_CORS_ORIGINS"
        )

    @staticmethod
    def _same_origin(origin: str, host: str) -> bool:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()
