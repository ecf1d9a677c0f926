"""HTTP connections whose request headers must arrive in time.

uvicorn closes a keep-alive connection that idles after a response, but a new connection that
never finishes its headers (slowloris: a byte every few seconds) stays open for good. This protocol
gives each request's headers a deadline, from the moment the connection opens or the previous
response ends; a body that stalls is answered by `api/limits.py`.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 36\r\nconnection: close\r\n\r\nthe request headers did not arrive\r\n"
)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout_s = 30.0  # set per server by `with_header_deadline`
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # a request already read runs next: its headers are in
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._arm()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        running = self.cycle is not None and not self.cycle.response_complete
        if not running and not self.transport.is_closing():
            self.transport.write(TIMED_OUT)
            self.transport.close()


def with_header_deadline(seconds: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class for uvicorn's `http=` setting, with this deadline."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": seconds})
