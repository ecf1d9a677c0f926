"""Read each request body whole, within a size and a time limit, before any route sees it.

A body over the limit is refused as soon as it crosses it, whether it came with a Content-Length
or chunked; a client that stops sending (or drips bytes to hold a connection) is answered 408.
Routes then read the buffered body, so nothing below this ever waits on the network.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from journeyd.domain.errors import InvalidRequest, JourneydError, RequestTimeout, TooLarge

ErrorForPath = Callable[[str, JourneydError], Response]
BODYLESS = ("GET", "HEAD", "OPTIONS")


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        read_timeout_s: float,
        render: ErrorForPath,
        per_path: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}  # endpoints whose bodies are small, refused beyond their own limit
        self.gap_s = read_timeout_s  # longest silence between two pieces of a body
        self.total_s = 4 * read_timeout_s  # and the most a whole body may take
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in BODYLESS:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(scope, receive)
        except JourneydError as error:
            await self.render(scope["path"], error)(scope, receive, send)
            return
        if body is None:  # the client went away
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body, only a disconnect can come
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes | None:
        limit = self.per_path.get(scope["path"], self.max_bytes)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                raise InvalidRequest("Content-Length must be a whole number of bytes")
            if int(length) > limit:
                raise self._too_large(limit)
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(self.total_s) as total:
            while True:
                with anyio.move_on_after(self.gap_s) as gap:
                    message = await receive()
                if gap.cancelled_caught:
                    break
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise self._too_large(limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        waited = self.total_s if total.cancelled_caught else self.gap_s
        raise RequestTimeout(
            f"the request body did not arrive in time ({size} bytes in, then nothing for {waited:.0f} s); "
            "send it again, whole"
        )

    def _too_large(self, limit: int) -> TooLarge:
        if limit < self.max_bytes:
            return TooLarge(f"request body is over {limit // 1024} KiB, this endpoint's limit")
        return TooLarge(f"request body is over {limit // (1024 * 1024)} MiB; send images as URLs or smaller")
