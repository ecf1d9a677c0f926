"""The studio: journeyd's own web page, served from files inside the package.

Plain ES modules and CSS with no build step, so `pip install` always ships a working page. It talks
to journeyd only through the public /mj API, and its Content-Security-Policy keeps it from loading
anything from another host.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).resolve().parent.parent / "studio" / "static"
PREFIX = "/studio"
HEADERS = {
    # revalidated on every load (a 304 when unchanged), so an upgrade of journeyd shows at once
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
def studio_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=HEADERS)


class StudioFiles(StaticFiles):
    """The page's modules and styles, with the page's own headers."""

    def file_response(self, full_path, stat_result, scope: Scope, status_code: int = 200):  # type: ignore[no-untyped-def]
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(HEADERS)
        return response


def files() -> StudioFiles:
    return StudioFiles(directory=STATIC)
