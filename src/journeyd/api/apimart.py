"""The apimart dialect: `/v1/midjourney/generations/*`, `/v1/midjourney/{task_id}`, `/v1/tasks/{task_id}`.

A translation table, checkable line by line against https://docs.apimart.ai/en/api-reference/images/midjourney:
snake_case requests, `{"code":200,"data":[{"status":"submitted","task_id":"task_<ULID>"}]}` on
submit, errors in the same envelope with the HTTP status as `code`.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from journeyd.api.auth import caller_of, current_caller
from journeyd.api.errors import JsonResponse, dialect_route
from journeyd.api.fields import Metadata
from journeyd.api.idempotency import IDEMPOTENT
from journeyd.api.urls import image_base
from journeyd.domain.buttons import Button
from journeyd.domain.errors import InvalidRequest, JourneydError
from journeyd.domain.lifecycle import MIDJOURNEY_STATUS, Status
from journeyd.domain.task import ClientData, Task
from journeyd.service import Caller, ModalInput, TaskService

PREFIX = "task_"
Speed = Literal["relax", "fast", "turbo"]

UNIFIED_STATUS = {
    Status.SUBMITTED: "pending",
    Status.IN_PROGRESS: "processing",
    Status.SUCCESS: "completed",
    Status.FAILURE: "failed",
    Status.MODAL: "pending",  # the unified enum has no "modal": it waits, not yet started, for its mask
    Status.CANCELLED: "cancelled",
}


def render_error(error: JourneydError) -> JsonResponse:
    body = {"code": error.status, "error": {"message": error.message, "type": error.kind, **error.details}}
    return JsonResponse(body, status_code=error.status)


router = APIRouter(route_class=dialect_route(render_error), tags=["apimart"])
CallerDep = Annotated[Caller, Depends(current_caller)]


# --- requests ------------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ImagineBody(_Body):
    prompt: str = Field(..., description="Midjourney prompt: optional image URLs, text, then --flags")
    speed: Speed | None = Field(None, description="relax (default), fast or turbo")
    image_urls: list[str] = Field(default_factory=list, max_length=5, description="Image prompts: URLs or base64")
    metadata: Metadata = None
    size: str | None = Field(None, description="Aspect ratio such as 16:9 (overrides --ar)")
    quality: float | None = Field(None, description="Overrides --q")
    style: str | None = Field(None, description="Overrides --style")
    version: str | float | None = Field(None, description="Overrides --v; 'niji 6' selects niji")
    seed: int | None = Field(None, description="Overrides --seed")
    negative_prompt: str | None = Field(None, description="Overrides --no")
    stylize: int | None = Field(None, description="Overrides --stylize (0-1000)")
    chaos: int | None = Field(None, description="Overrides --chaos (0-100)")
    iw: float | None = Field(None, description="Overrides --iw")
    weird: int | None = Field(None, description="Overrides --weird")
    tile: bool | None = Field(None, description="Overrides --tile")


class ActionBody(_Body):
    task_id: str | None = Field(None, description="The task whose button to press")
    index: int | None = Field(None, ge=1, le=4, description="Which image of a grid, 1-4")
    custom_id: str | None = Field(None, description="A button customId from the task's buttons")
    speed: Speed | None = None
    metadata: Metadata = None


class ZoomBody(ActionBody):
    zoom_ratio: float | None = Field(None, gt=0, description="Below 2 means Zoom Out 1.5x, otherwise 2x")


class PanBody(ActionBody):
    direction: Literal["left", "right", "up", "down"] | None = None


class ModalBody(_Body):
    task_id: str = Field(..., description="The MODAL task returned by inpaint")
    prompt: str | None = Field(None, description="Prompt for the region; empty uses the parent's prompt")
    mask_url: str | None = Field(
        None, description="URL, data URL or base64; white = repaint, black or transparent = keep"
    )


# --- presenting ----------------------------------------------------------------------------------
def submitted(task: Task) -> JsonResponse:
    status = "modal" if task.status is Status.MODAL else "submitted"
    return JsonResponse({"code": 200, "data": [{"status": status, "task_id": PREFIX + task.id}]})


@functools.lru_cache(maxsize=4096)
def _buttons(buttons: tuple[Button, ...]) -> list[dict[str, str]]:
    return [{"customId": b.custom_id, "label": b.text} for b in buttons]


def task_view(task: Task, request: Request) -> dict[str, Any]:
    result = task.result
    base = image_base(request)
    return {
        "id": PREFIX + task.id,
        "status": MIDJOURNEY_STATUS[task.status],
        "action": task.action.value,
        "progress": f"{task.progress}%",
        "prompt": task.prompt,
        "grid_image_url": f"{base}/{result.grid}" if result else None,
        "image_urls": [f"{base}/{key}" for key in result.images] if result else [],
        "preview_url": f"{base}/{task.preview}" if task.preview else None,
        "buttons": _buttons(task.buttons),
        "fail_reason": task.fail_reason,
        "metadata": task.client.metadata,
        "speed": task.speed.value,
        "parent_task_id": PREFIX + task.parent_id if task.parent_id else None,
        "submit_time": task.created_at,
        "start_time": task.started_at,
        "finish_time": task.finished_at,
        "properties": {
            "finalPrompt": task.final_prompt,
            "engine": task.engine,
            "seed": task.seed,
            "width": result.width if result else None,
            "height": result.height if result else None,
        },
    }


def unified_view(task: Task, request: Request) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": PREFIX + task.id,
        "status": UNIFIED_STATUS[task.status],
        "progress": task.progress,
        "created": task.created_at // 1000,
        "estimated_time": 60,
    }
    if task.status is Status.SUCCESS and task.result:
        base = image_base(request)
        urls = [f"{base}/{key}" for key in task.result.images]
        view["result"] = {"images": [{"url": urls, "expires_at": None}]}
    if task.finished_at is not None:
        view["completed"] = task.finished_at // 1000
        view["actual_time"] = (task.finished_at - task.created_at) // 1000
    if task.status in (Status.FAILURE, Status.CANCELLED):
        view["error"] = {"message": task.fail_reason or task.status.value, "type": task.status.value}
    return view


# --- routes --------------------------------------------------------------------------------------
def _service(request: Request) -> TaskService:
    return request.app.state.service


# Reads come first (routes are matched in order), are async, and take the task id and the caller
# from the request rather than through parameters and Depends: one indexed SQLite read (WAL readers
# never wait for writers) costs less than a hop to the thread pool or a round of parameter
# validation, and clients poll these constantly. The path parameter is documented by hand.
TASK_ID = {
    "parameters": [
        {
            "name": "task_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "task_<ULID>, as returned on submit",
        }
    ]
}


@router.get("/v1/midjourney/{task_id}", summary="A task in Midjourney's shape, with buttons", openapi_extra=TASK_ID)
async def fetch(request: Request) -> JsonResponse:
    task = _service(request).get(caller_of(request), request.path_params["task_id"])
    return JsonResponse(task_view(task, request))


@router.get("/v1/tasks/{task_id}", summary="A task in apimart's unified shape", openapi_extra=TASK_ID)
async def fetch_unified(request: Request) -> JsonResponse:
    task = _service(request).get(caller_of(request), request.path_params["task_id"])
    return JsonResponse({"code": 200, "data": unified_view(task, request)})


@router.post("/v1/midjourney/generations", summary="Imagine: a grid of four images", dependencies=IDEMPOTENT)
@router.post("/v1/midjourney/generations/imagine", summary="Imagine (alias)", dependencies=IDEMPOTENT)
def imagine(body: ImagineBody, request: Request, caller: CallerDep) -> JsonResponse:
    overrides = {
        "aspect": body.size,
        "quality": body.quality,
        "style": body.style,
        "version": None if body.version is None else str(body.version),
        "seed": body.seed,
        "no": body.negative_prompt,
        "stylize": body.stylize,
        "chaos": body.chaos,
        "image_weight": body.iw,
        "weird": body.weird,
        "tile": body.tile,
        "speed": body.speed,
    }
    task = _service(request).imagine(
        caller, body.prompt, overrides=overrides, image_urls=body.image_urls, client=ClientData(metadata=body.metadata)
    )
    return submitted(task)


def _press(name: str, body: ActionBody, request: Request, caller: Caller, **extra: Any) -> JsonResponse:
    service = _service(request)
    if body.task_id:
        task_id = body.task_id
    elif body.custom_id:
        task_id = service.resolve_custom_id(body.custom_id)
    else:
        raise InvalidRequest("task_id is required (or a custom_id from a task's buttons)")
    if name in ("upscale", "variation") and not body.custom_id and body.index is None:
        raise InvalidRequest(f"{name} needs index (1-4) or custom_id")
    task = service.press(
        caller,
        task_id,
        custom_id=body.custom_id,
        name=name,
        index=body.index,
        speed=body.speed,
        client=ClientData(metadata=body.metadata),
        **extra,
    )
    return submitted(task)


@router.post("/v1/midjourney/generations/upscale", summary="U1-U4: one image of a grid", dependencies=IDEMPOTENT)
def upscale(body: ActionBody, request: Request, caller: CallerDep) -> JsonResponse:
    return _press("upscale", body, request, caller)


@router.post(
    "/v1/midjourney/generations/variation", summary="V1-V4: variations of one image of a grid", dependencies=IDEMPOTENT
)
def variation(body: ActionBody, request: Request, caller: CallerDep) -> JsonResponse:
    return _press("variation", body, request, caller)


@router.post("/v1/midjourney/generations/high-variation", summary="Vary (Strong)", dependencies=IDEMPOTENT)
def high_variation(body: ActionBody, request: Request, caller: CallerDep) -> JsonResponse:
    return _press("high-variation", body, request, caller)


@router.post("/v1/midjourney/generations/low-variation", summary="Vary (Subtle)", dependencies=IDEMPOTENT)
def low_variation(body: ActionBody, request: Request, caller: CallerDep) -> JsonResponse:
    return _press("low-variation", body, request, caller)


@router.post("/v1/midjourney/generations/reroll", summary="🔄 Reroll a grid", dependencies=IDEMPOTENT)
def reroll(body: ActionBody, request: Request, caller: CallerDep) -> JsonResponse:
    return _press("reroll", body, request, caller)


@router.post(
    "/v1/midjourney/generations/zoom", summary="Zoom Out 2x / 1.5x of an upscaled image", dependencies=IDEMPOTENT
)
def zoom(body: ZoomBody, request: Request, caller: CallerDep) -> JsonResponse:
    return _press("zoom", body, request, caller, zoom_ratio=body.zoom_ratio)


@router.post("/v1/midjourney/generations/pan", summary="Pan an upscaled image", dependencies=IDEMPOTENT)
def pan(body: PanBody, request: Request, caller: CallerDep) -> JsonResponse:
    if not body.custom_id and not body.direction:
        raise InvalidRequest("pan needs direction (left, right, up or down) or a pan custom_id")
    return _press("pan", body, request, caller, direction=body.direction)


@router.post(
    "/v1/midjourney/generations/inpaint",
    summary="Vary (Region): the task waits in MODAL for a mask",
    dependencies=IDEMPOTENT,
)
def inpaint(body: ActionBody, request: Request, caller: CallerDep) -> JsonResponse:
    return _press("inpaint", body, request, caller)


@router.post(
    "/v1/midjourney/generations/modal", summary="Finish a MODAL task with a mask and prompt", dependencies=IDEMPOTENT
)
def modal(body: ModalBody, request: Request, caller: CallerDep) -> JsonResponse:
    task = _service(request).modal(caller, body.task_id, ModalInput(body.prompt, body.mask_url))
    return submitted(task)
