"""The ASGI app: every dialect's router over one runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from journeyd.api import apimart, images, mjproxy, mymidjourney
from journeyd.api.auth import Authenticator
from journeyd.api.limits import BodyLimit
from journeyd.api.readiness import Readiness, readiness
from journeyd.runtime import Runtime


def create_app(runtime: Runtime, *, manage_runtime: bool = True) -> FastAPI:
    """The app. With `manage_runtime` its lifespan starts and stops the workers and upkeep."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_runtime:
            runtime.start()
        try:
            yield
        finally:
            if manage_runtime:
                runtime.stop()

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
    for router in (apimart.router, mjproxy.router, mymidjourney.router, images.router):
        # Added flat rather than with include_router, which nests a second round of route matching
        # into every request (measured: ~10% of a poll's cost).
        app.router.routes.extend(router.routes)

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    def healthz() -> dict[str, object]:
        return {"ok": True, "engine": runtime.engine.name}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness: the database and the image folder take writes, the engine is loaded (503 if not)",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready: `reason` says why"}},
    )
    def readyz() -> JSONResponse:
        report = readiness(runtime)
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    return app
