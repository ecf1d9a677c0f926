"""Images served by journeyd itself, at stable URLs that survive a restart.

Whatever adapter holds them: a local file goes out with sendfile, an S3 object as its bytes. The
URL is the secret, so an image never changes under it and may be cached for good.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from journeyd.api.apimart import ApimartError
from journeyd.api.openapi import STATUS_MEANINGS
from journeyd.domain.errors import StorageUnavailable
from journeyd.media.storage import MEDIA_TYPES, ImageStore, media_type

log = logging.getLogger("journeyd.api")
router = APIRouter(tags=["images"])
CACHE_FOREVER = {"Cache-Control": "public, max-age=31536000, immutable"}


def _error(code: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"code": code, "error": {"message": message, "type": kind}}, status_code=code)


@router.get(
    "/images/{task_id}/{name}",
    summary="A task's image (no key needed: the URL is the secret)",
    operation_id="image",
    response_model=None,
    responses={
        200: {
            "description": "The image",
            "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in MEDIA_TYPES.values()},
        },
        400: {"model": ApimartError, "description": STATUS_MEANINGS[400]},
        404: {"model": ApimartError, "description": "No such image"},
        503: {"model": ApimartError, "description": STATUS_MEANINGS[503]},
    },
)
def image(task_id: str, name: str, request: Request) -> Response:
    images: ImageStore = request.app.state.images
    key = f"{task_id}/{name}"
    try:
        stored = None if name.startswith("input-") else images.open(key)  # inputs are the client's, not public
    except StorageUnavailable as error:  # the operator's to fix: one line in the log, no traceback
        log.error("GET /images/%s: %s", key, error)
        return _error(503, error.message, error.kind)
    if stored is None:
        return _error(404, f"no image {key}", "not_found")
    if isinstance(stored, Path):
        return FileResponse(stored, media_type=media_type(key), headers=CACHE_FOREVER)
    return Response(stored, media_type=media_type(key), headers=CACHE_FOREVER)
