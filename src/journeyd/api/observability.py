"""Per request: a request id, one log line and the HTTP metrics; and `/metrics` itself.

The request id is the client's `X-Request-Id` when it is a sane token, else a new one, and is
echoed on the response. Routes are labelled by their template (`/mj/task/{id}/fetch`), and a path
no route matches by one value, so neither logs nor metrics grow with what clients send.
"""

from __future__ import annotations

import logging
import re
import secrets
import time

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from journeyd import metrics
from journeyd.api.apimart import ApimartError, render_error
from journeyd.api.auth import caller_of, is_loopback
from journeyd.api.errors import dialect_route
from journeyd.api.openapi import LIST, STATUS_MEANINGS
from journeyd.domain.lifecycle import Speed, Status
from journeyd.logs import RequestInfo, current_request, plain
from journeyd.store.base import TaskStore

log = logging.getLogger("journeyd.http")
REQUEST_ID = b"x-request-id"
_SANE_ID = re.compile(rb"[A-Za-z0-9._~:/+=@-]{1,128}")
MAX_LOGGED_PATH = 256


def request_id_of(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID:
            return value.decode("ascii") if _SANE_ID.fullmatch(value) else secrets.token_hex(8)
    return secrets.token_hex(8)


def route_of(scope: Scope) -> str:
    """The template of the route that answered, or that would have (a body refused before routing)."""
    route = scope.get("route")
    if route is None:  # match as the router does: the first full match, else the first partial one
        partial = None
        for candidate in scope["app"].router.routes:
            match = candidate.matches(scope)[0]
            if match is Match.FULL:
                route = candidate
                break
            if match is Match.PARTIAL and partial is None:
                partial = candidate
        route = route or partial
    return getattr(route, "path_format", None) or metrics.UNMATCHED_ROUTE  # `{task_id}`, not `{task_id:task_id}`


class RequestLog:
    """ASGI middleware, outermost, so it sees every answer, a refused body's 413 included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request = RequestInfo(request_id_of(scope), scope.setdefault("state", {}))
        echo = (REQUEST_ID, request.id.encode("ascii"))
        status = 500  # what the client gets if the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echo]
            await send(message)

        token = current_request.set(request)
        metrics.HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            current_request.reset(token)
            self._record(scope, request, status, time.perf_counter() - started)

    @staticmethod
    def _record(scope: Scope, request: RequestInfo, status: int, seconds: float) -> None:
        method, route = scope["method"], route_of(scope)
        metrics.http_request(route, method, status, seconds)
        if not log.isEnabledFor(logging.INFO):
            return
        path = scope["path"]
        if len(path) > MAX_LOGGED_PATH:
            path = path[:MAX_LOGGED_PATH] + "…"
        duration_ms = round(seconds * 1000, 2)
        log.info(
            "%s %s %d %.1f ms",
            method,
            plain(path),
            status,
            duration_ms,
            extra={
                "in_message": ("method", "path", "status", "duration_ms"),
                "fields": {
                    "method": method,
                    "route": route,
                    "path": path,
                    "status": status,
                    "duration_ms": duration_ms,
                    "request_id": request.id,
                    "key": request.key_prefix,
                },
            },
        )


def queue_depth(store: TaskStore) -> metrics.QueueDepth:
    def counts() -> dict[tuple[str, str], int]:
        return {(speed.value, status.value): count for (speed, status), count in store.queue_depth().items()}

    return metrics.QueueDepth(
        counts, [speed.value for speed in Speed], [Status.SUBMITTED.value, Status.IN_PROGRESS.value]
    )


router = APIRouter(route_class=dialect_route(render_error), tags=["observability"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    operation_id="metrics",
    responses={
        200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **{status: {"model": ApimartError, "description": STATUS_MEANINGS[status]} for status in LIST},
    },
)
def prometheus_metrics(request: Request) -> Response:
    """Free on loopback; from elsewhere it needs a key unless `JOURNEYD_METRICS_PUBLIC=1`."""
    client = request.client.host if request.client else None
    if not (request.app.state.metrics_public or is_loopback(client)):
        caller_of(request)  # 401/403 without a valid key
    body, content_type = metrics.exposition(request.app.state.queue_depth)
    return Response(body, media_type=content_type)
