"""The ASGI app: every dialect's router over one runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from journeyd import metrics
from journeyd.api import apimart, images, mjproxy, mymidjourney, observability, studio
from journeyd.api.auth import Authenticator
from journeyd.api.docs import add_docs
from journeyd.api.errors import from_http
from journeyd.api.limits import BodyLimit
from journeyd.api.observability import RequestLog
from journeyd.api.openapi import STATUS_MEANINGS, finish
from journeyd.api.origins import HostGuard, HostPolicy
from journeyd.api.readiness import Readiness, readiness
from journeyd.domain.errors import JourneydError
from journeyd.runtime import Runtime


class Health(BaseModel):
    ok: bool
    engine: str


HEALTH_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": apimart.ApimartError, "description": STATUS_MEANINGS[400]}
}
PUBLIC_PATHS = ("/images/", "/healthz", "/readyz")  # answered without a key


def render_for_path(path: str, error: JourneydError) -> Response:
    """An error in the envelope of the dialect that owns `path` (apimart's for the rest), for the
    refusals made before any route runs: unknown paths, bodies too large or too slow."""
    if path.startswith(mymidjourney.PREFIXES):
        return mymidjourney.render_error(error)
    if mjproxy.owns(path):
        return mjproxy.render_error(error)
    return apimart.render_error(error)


def create_app(runtime: Runtime, *, manage_runtime: bool = True) -> FastAPI:
    """The app. With `manage_runtime` its lifespan starts and stops the workers and upkeep."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_runtime:
            metrics.forget_dead_processes()
            runtime.start()
        try:
            yield
        finally:
            if manage_runtime:
                runtime.stop()
                # here, not atexit: uvicorn ends the process by re-raising SIGTERM, which skips atexit
                metrics.process_exiting()

    app = FastAPI(
        title="journeyd",
        version="0.1.0",
        summary="Midjourney-compatible task APIs, served from your own hardware",
        lifespan=lifespan,
        docs_url=None,  # served from local files instead (api/docs.py)
        redoc_url=None,
    )
    add_docs(app)
    settings = runtime.settings
    # The dialects write the webhook payloads: the runtime's notifier delivers what they render.
    runtime.notifier.renderers.update(
        {"mj": mjproxy.webhook_renderer(runtime.service), "mymidjourney": mymidjourney.message_json}
    )
    app.state.service = runtime.service
    app.state.images = runtime.images
    app.state.public_url = settings.public_url.rstrip("/") if settings.public_url else None
    app.state.auth = Authenticator(runtime.store, allow_remote_anonymous=settings.insecure)
    app.state.metrics_public = settings.metrics_public
    app.state.events_poll_s = settings.events_poll_s
    app.state.queue_depth = observability.queue_depth(runtime.store)
    routers = (apimart.router, mjproxy.router, mymidjourney.router, images.router, observability.router, studio.router)
    for router in routers:
        # Added flat rather than with include_router, which nests a second round of route matching
        # into every request (measured: ~10% of a poll's cost).
        app.router.routes.extend(router.routes)
    app.mount(studio.PREFIX, studio.files(), name="studio")

    @app.get(
        "/healthz",
        tags=["health"],
        summary="Liveness: the process answers",
        operation_id="healthz",
        responses=HEALTH_ERRORS,
    )
    def healthz() -> Health:
        name = runtime.rules.name
        return Health(ok=True, engine=name if runtime.loaded else f"{name} (not loaded: API node)")

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness: the database and the image folder take writes, the engine is loaded unless this is "
        "an API node (503 if not)",
        operation_id="readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready: `reason` says why"}, **HEALTH_ERRORS},
    )
    def readyz() -> JSONResponse:
        report = readiness(runtime)
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    finish(app, public=PUBLIC_PATHS, key_beyond_loopback=("/metrics",))

    @app.exception_handler(HTTPException)
    async def refused(request: Request, error: HTTPException) -> Response:
        response = render_for_path(request.url.path, from_http(error, request.method))
        if error.status_code == 405 and error.headers:
            response.headers["Allow"] = error.headers.get("Allow", "")
        return response

    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_request_bytes,
        read_timeout_s=settings.read_timeout_s,
        render=render_for_path,
        per_path=mjproxy.BODY_LIMITS,
    )
    if settings.cors_origin_list():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list(),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "mj-api-secret", "Content-Type", "Idempotency-Key", "X-Request-Id"],
            expose_headers=["X-Request-Id"],
        )
    app.add_middleware(  # before the body is read: an unknown Host or a keyless cross-origin page gets nothing
        HostGuard,
        policy=HostPolicy(bind=settings.host, public_url=settings.public_url, allowed=settings.allowed_host_list()),
        cors_origins=settings.cors_origin_list(),
        render=render_for_path,
    )
    app.add_middleware(RequestLog)  # added last, so outermost: it sees every answer, refusals included
    return app
