"""The ASGI app: every dialect's router over one runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from journeyd import metrics
from journeyd.api import apimart, images, mjproxy, mymidjourney, observability
from journeyd.api.auth import Authenticator
from journeyd.api.limits import BodyLimit
from journeyd.api.observability import RequestLog
from journeyd.runtime import Runtime


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
    )
    settings = runtime.settings
    app.state.service = runtime.service
    app.state.images = runtime.images
    app.state.public_url = settings.public_url.rstrip("/") if settings.public_url else None
    app.state.auth = Authenticator(runtime.store, allow_remote_anonymous=settings.insecure)
    app.state.metrics_public = settings.metrics_public
    app.state.queue_depth = observability.queue_depth(runtime.store)
    for router in (apimart.router, mjproxy.router, mymidjourney.router, images.router, observability.router):
        # Added flat rather than with include_router, which nests a second round of route matching
        # into every request (measured: ~10% of a poll's cost).
        app.router.routes.extend(router.routes)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, object]:
        return {"ok": True, "engine": runtime.engine.name}

    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestLog)  # added last, so outermost: it sees every answer
    return app
