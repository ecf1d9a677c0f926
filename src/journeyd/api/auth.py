"""Who is calling: API keys from any header the supported clients use.

`Authorization: Bearer <key>` (apimart, mymidjourney), a bare `Authorization: <key>`
(ChatGPT-Midjourney) and `mj-api-secret: <key>` (midjourney-proxy clients) all work. With no key
created, unauthenticated requests are served on loopback only: a fresh install is usable at once
and never open to the network by accident. (Clients that always send some token still work then:
with no key to check it against, it is ignored.)
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import math
import time

from starlette.requests import Request

from journeyd.api.idempotency import idempotency_of
from journeyd.domain.errors import Forbidden, Unauthorized
from journeyd.domain.keys import hash_secret
from journeyd.service import Caller
from journeyd.store.base import TaskStore


@functools.lru_cache(maxsize=1024)
def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


KEY_HEADERS = ("mj-api-secret", "authorization")  # the headers a client may carry its key in


def presented_secret(request: Request) -> str | None:
    secret = request.headers.get("mj-api-secret")
    if secret:
        return secret.strip()
    authorization = request.headers.get("authorization", "").strip()
    scheme, _, rest = authorization.partition(" ")
    if rest and scheme.lower() == "bearer":
        return rest.strip()
    return authorization or None


class Authenticator:
    KEYS_RECHECK_S = 1.0  # `journeyd keys create` runs in another process; notice it within a second

    def __init__(self, store: TaskStore, *, allow_remote_anonymous: bool = False) -> None:
        self.store = store
        self.allow_remote_anonymous = allow_remote_anonymous
        self._keys_exist = False
        self._keys_checked = -math.inf

    def keys_required(self) -> bool:
        """Whether every request needs a key: some key exists (anonymous loopback use is over for good,
        so only the "no keys yet" answer is cached)."""
        if not self._keys_exist and time.monotonic() - self._keys_checked > self.KEYS_RECHECK_S:
            self._keys_exist = self.store.count_keys() > 0
            self._keys_checked = time.monotonic()
        return self._keys_exist

    def authenticate(self, request: Request) -> Caller:
        secret = presented_secret(request)
        if secret:
            key = self.store.key_by_hash(hash_secret(secret))
            if key is not None:
                if key.revoked:
                    raise Forbidden("this API key has been revoked")
                return Caller(key)
        if self.keys_required():
            if secret:
                raise Unauthorized("API key not recognised; check the key you were given by `journeyd keys create`")
            raise Unauthorized("send your API key as 'Authorization: Bearer <key>'")
        # No key exists yet: whatever token a client insists on sending, loopback is the operator.
        client = request.client.host if request.client else None
        if self.allow_remote_anonymous or is_loopback(client):
            return Caller(None)
        raise Forbidden(
            "this server has no API keys yet and only serves unauthenticated requests from loopback; "
            "create one with `journeyd keys create` and send it as 'Authorization: Bearer <key>'"
        )


def caller_of(request: Request) -> Caller:
    """The caller of this request (raises 401/403), with the Idempotency-Key of its submit."""
    auth: Authenticator = request.app.state.auth
    caller = auth.authenticate(request)
    request.state.key_prefix = caller.key.prefix if caller.key else None  # for the request's log line
    idempotency = idempotency_of(request)
    return dataclasses.replace(caller, idempotency=idempotency) if idempotency else caller


async def current_caller(request: Request) -> Caller:
    """FastAPI dependency for `caller_of`. Async on purpose: a couple of indexed SQLite reads are
    cheaper inline than a hop to the thread pool."""
    return caller_of(request)
