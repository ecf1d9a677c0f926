"""Images served by journeyd itself, at stable URLs that survive a restart."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from journeyd.api.apimart import ApimartError
from journeyd.api.openapi import STATUS_MEANINGS
from journeyd.media.storage import LocalImageStore

router = APIRouter(tags=["images"])
MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "jpg": "image/jpeg"}


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
    },
)
def image(task_id: str, name: str, request: Request) -> Response:
    images: LocalImageStore = request.app.state.images
    path = images.path(f"{task_id}/{name}")
    if path is None or name.startswith("input-"):
        return JSONResponse(
            {"code": 404, "error": {"message": f"no image {task_id}/{name}", "type": "not_found"}}, status_code=404
        )
    return FileResponse(
        path,
        media_type=MEDIA_TYPES[path.suffix.lstrip(".")],
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )
