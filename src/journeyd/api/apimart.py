"""The apimart dialect: `/v1/midjourney/generations/*`, `/v1/midjourney/{task_id}`, `/v1/tasks/{task_id}`.

A translation table, checkable line by line against https://docs.apimart.ai/en/api-reference/images/midjourney:
snake_case requests, `{"code":200,"data":[{"status":"submitted","task_id":"task_<ULID>"}]}` on
submit, errors in the same envelope with the HTTP status as `code`. Beside them, journeyd's own
`/v1/account`: the caller's key and its credits, in the same envelope.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.convertors import StringConvertor, register_url_convertor

from journeyd.api.auth import Authenticator, caller_of, current_caller
from journeyd.api.errors import JsonResponse, dialect_route
from journeyd.api.fields import Metadata
from journeyd.api.idempotency import IDEMPOTENT
from journeyd.api.openapi import EXAMPLE_MASK, LIST, READ, SUBMIT, documented, link
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


class TaskIdConvertor(StringConvertor):
    """A task id in `/v1/midjourney/{task_id}`: anything but "generations", so that path is the submit
    endpoint's alone (a GET or PUT there is a 405 that names POST, not a search for a task)."""

    regex = "(?!generations$)[^/]+"


register_url_convertor("task_id", TaskIdConvertor())


def render_error(error: JourneydError) -> JsonResponse:
    body = {"code": error.status, "error": {"message": error.message, "type": error.kind, **error.details}}
    return JsonResponse(body, status_code=error.status)


router = APIRouter(
    route_class=dialect_route(render_error),
    tags=["apimart"],
    generate_unique_id_function=lambda route: f"apimart_{route.name}",
)
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


class DescribeBody(_Body):
    image_url: str | None = Field(None, description="The image to describe: a URL, a data URL or base64")
    image_urls: list[str] = Field(default_factory=list, max_length=1, description="Or the image as the only element")
    speed: Speed | None = None
    metadata: Metadata = None


class BlendBody(_Body):
    image_urls: list[str] = Field(..., description="2 to 5 images to mix: URLs, data URLs or base64")
    dimensions: str | None = Field(None, description="PORTRAIT (2:3), SQUARE (default) or LANDSCAPE (3:2)")
    prompt: str = Field("", description="An optional prompt (text and --flags) to steer the mix")
    speed: Speed | None = None
    metadata: Metadata = None


class ShortenBody(_Body):
    prompt: str = Field(..., description="The prompt to analyse: its words' weights and five shorter prompts")
    speed: Speed | None = None
    metadata: Metadata = None


# --- responses -----------------------------------------------------------------------------------
class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Answer):
    message: str = Field(..., description="What went wrong, for a person to act on")
    type: str = Field(..., description="invalid_request, unauthorized, insufficient_credits, not_found, ...")
    price: int | None = Field(None, description="402: what the request costs")
    balance: int | None = Field(None, description="402: what the key has")
    price_key: str | None = Field(None, description="402: the price table entry that applied")
    limit_bytes: int | None = Field(None, description="413: the size limit")
    banned_word: str | None = Field(None, description="400: the banned word the prompt contains")
    address: str | None = Field(None, description="422: the private address a URL resolved to")
    status: int | None = Field(None, description="422: the HTTP status a fetched URL answered")


class ApimartError(_Answer):
    code: int = Field(..., description="The HTTP status again")
    error: ErrorDetail


class Submitted(_Answer):
    status: Literal["submitted", "modal"] = Field(..., description="modal: waiting for POST .../modal")
    task_id: str = Field(..., description="task_<ULID>")


class SubmitAnswer(_Answer):
    code: Literal[200]
    data: list[Submitted] = Field(..., min_length=1, max_length=1)


class ButtonView(_Answer):
    customId: str
    label: str


class TaskProperties(_Answer):
    finalPrompt: str = Field(
        ..., description="The prompt as the engine reads it, overrides applied; a describe's or shorten's answer"
    )
    engine: str | None
    seed: int
    width: int | None
    height: int | None
    prompts: list[str] = Field(..., description="A describe's four prompts or a shorten's five; [] otherwise")


class TaskView(_Answer):
    id: str
    status: Literal["SUBMITTED", "IN_PROGRESS", "SUCCESS", "FAILURE", "MODAL", "CANCEL"]
    action: str = Field(..., description="IMAGINE, UPSCALE, VARIATION, REROLL, INPAINT, ZOOM, PAN, ...")
    progress: str = Field(..., description='"45%"')
    prompt: str
    grid_image_url: str | None
    image_urls: list[str]
    preview_url: str | None = Field(..., description="While it runs: the latest step preview")
    buttons: list[ButtonView]
    fail_reason: str | None
    metadata: Any
    speed: Speed
    parent_task_id: str | None
    submit_time: int = Field(..., description="Milliseconds since the epoch")
    start_time: int | None
    finish_time: int | None
    properties: TaskProperties


class UnifiedImage(_Answer):
    url: list[str]
    expires_at: None


class UnifiedResult(_Answer):
    images: list[UnifiedImage]


class UnifiedError(_Answer):
    message: str
    type: str


class UnifiedTask(_Answer):
    id: str
    status: Literal["pending", "processing", "completed", "failed", "cancelled"]
    progress: int = Field(..., ge=0, le=100)
    created: int = Field(..., description="Seconds since the epoch")
    estimated_time: int
    result: UnifiedResult | None = None
    completed: int | None = None
    actual_time: int | None = None
    error: UnifiedError | None = None


class UnifiedAnswer(_Answer):
    code: Literal[200]
    data: UnifiedTask


class AccountKey(_Answer):
    prefix: str = Field(..., description="The key's first characters, as `journeyd keys list` shows them")
    name: str
    balance: int = Field(..., description="Credits left")


class Account(_Answer):
    keysRequired: bool = Field(
        ..., description="Whether the server has keys; false: it serves loopback without one (key is then null)"
    )
    key: AccountKey | None = Field(..., description="The key this request presented")


NEW_TASK = "$response.body#/data/0/task_id"
TASK_ID_LINKS = {  # what a client does next with the task a submit made
    "fetch": link("apimart_fetch", "Poll the new task", task_id=NEW_TASK),
    "fetch_unified": link("apimart_fetch_unified", "Poll it in the unified shape", task_id=NEW_TASK),
    "upscale": link("apimart_upscale", "U1 on a grid", body_task_id=NEW_TASK, body_index=1),
    "variation": link("apimart_variation", "V2 on a grid", body_task_id=NEW_TASK, body_index=2),
    "zoom": link("apimart_zoom", "Zoom Out 2x an upscaled image", body_task_id=NEW_TASK, body_zoom_ratio=2),
    "pan": link("apimart_pan", "Pan an upscaled image left", body_task_id=NEW_TASK, body_direction="left"),
    "inpaint": link("apimart_inpaint", "Vary (Region) on an upscaled image", body_task_id=NEW_TASK),
    "modal": link(
        "apimart_modal",
        "The mask and prompt for a task waiting in MODAL",
        body_task_id=NEW_TASK,
        body_prompt="a small boat",
        body_mask_url=EXAMPLE_MASK,
    ),
}


def _submit_route(path: str, summary: str, **options: Any) -> Any:
    return router.post(
        path,
        summary=summary,
        dependencies=IDEMPOTENT,
        responses=documented(SubmitAnswer, ApimartError, SUBMIT, links=TASK_ID_LINKS),
        **options,
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
        "grid_image_url": f"{base}/{result.grid}" if result and result.grid else None,  # a shorten has no image
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
            "prompts": list(result.prompts) if result else [],
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


@router.get(
    "/v1/midjourney/{task_id:task_id}",
    summary="A task in Midjourney's shape, with buttons",
    openapi_extra=TASK_ID,
    responses=documented(TaskView, ApimartError, READ),
)
async def fetch(request: Request) -> JsonResponse:
    task = _service(request).get(caller_of(request), request.path_params["task_id"])
    return JsonResponse(task_view(task, request))


@router.get(
    "/v1/tasks/{task_id}",
    summary="A task in apimart's unified shape",
    openapi_extra=TASK_ID,
    responses=documented(UnifiedAnswer, ApimartError, READ),
)
async def fetch_unified(request: Request) -> JsonResponse:
    task = _service(request).get(caller_of(request), request.path_params["task_id"])
    return JsonResponse({"code": 200, "data": unified_view(task, request)})


@router.get(
    "/v1/account",
    summary="The caller's key and its credits",
    responses=documented(Account, ApimartError, LIST),
)
async def account(request: Request) -> JsonResponse:
    key = caller_of(request).key
    auth: Authenticator = request.app.state.auth
    return JsonResponse(
        {
            "keysRequired": auth.keys_required(),
            "key": {"prefix": key.prefix, "name": key.name, "balance": key.balance} if key else None,
        }
    )


@_submit_route("/v1/midjourney/generations", "Imagine: a grid of four images")
@_submit_route("/v1/midjourney/generations/imagine", "Imagine (alias)", name="imagine_alias")
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


@_submit_route("/v1/midjourney/generations/upscale", "U1-U4: one image of a grid")
def upscale(body: ActionBody, request: Request, caller: CallerDep) -> JsonResponse:
    return _press("upscale", body, request, caller)


@_submit_route("/v1/midjourney/generations/variation", "V1-V4: variations of one image of a grid")
def variation(body: ActionBody, request: Request, caller: CallerDep) -> JsonResponse:
    return _press("variation", body, request, caller)


@_submit_route("/v1/midjourney/generations/high-variation", "Vary (Strong)")
def high_variation(body: ActionBody, request: Request, caller: CallerDep) -> JsonResponse:
    return _press("high-variation", body, request, caller)


@_submit_route("/v1/midjourney/generations/low-variation", "Vary (Subtle)")
def low_variation(body: ActionBody, request: Request, caller: CallerDep) -> JsonResponse:
    return _press("low-variation", body, request, caller)


@_submit_route("/v1/midjourney/generations/reroll", "🔄 Reroll a grid")
def reroll(body: ActionBody, request: Request, caller: CallerDep) -> JsonResponse:
    return _press("reroll", body, request, caller)


@_submit_route("/v1/midjourney/generations/zoom", "Zoom Out 2x / 1.5x of an upscaled image")
def zoom(body: ZoomBody, request: Request, caller: CallerDep) -> JsonResponse:
    return _press("zoom", body, request, caller, zoom_ratio=body.zoom_ratio)


@_submit_route("/v1/midjourney/generations/pan", "Pan an upscaled image")
def pan(body: PanBody, request: Request, caller: CallerDep) -> JsonResponse:
    if not body.custom_id and not body.direction:
        raise InvalidRequest("pan needs direction (left, right, up or down) or a pan custom_id")
    return _press("pan", body, request, caller, direction=body.direction)


@_submit_route("/v1/midjourney/generations/inpaint", "Vary (Region): the task waits in MODAL for a mask")
def inpaint(body: ActionBody, request: Request, caller: CallerDep) -> JsonResponse:
    return _press("inpaint", body, request, caller)


@_submit_route("/v1/midjourney/generations/describe", "Describe: four prompts for an image")
def describe(body: DescribeBody, request: Request, caller: CallerDep) -> JsonResponse:
    image = body.image_url or (body.image_urls[0] if body.image_urls else "")
    field = "image_url" if body.image_url else "image_urls"
    task = _service(request).describe(
        caller, image, field=field, speed=body.speed, client=ClientData(metadata=body.metadata)
    )
    return submitted(task)


@_submit_route("/v1/midjourney/generations/blend", "Blend: a grid of four mixing 2 to 5 images")
def blend(body: BlendBody, request: Request, caller: CallerDep) -> JsonResponse:
    task = _service(request).blend(
        caller,
        body.image_urls,
        dimensions=body.dimensions,
        prompt=body.prompt,
        speed=body.speed,
        client=ClientData(metadata=body.metadata),
    )
    return submitted(task)


@_submit_route("/v1/midjourney/generations/shorten", "Shorten: the prompt's token weights and five shorter prompts")
def shorten(body: ShortenBody, request: Request, caller: CallerDep) -> JsonResponse:
    task = _service(request).shorten(caller, body.prompt, speed=body.speed, client=ClientData(metadata=body.metadata))
    return submitted(task)


@_submit_route("/v1/midjourney/generations/modal", "Finish a MODAL task with a mask and prompt")
def modal(body: ModalBody, request: Request, caller: CallerDep) -> JsonResponse:
    task = _service(request).modal(caller, body.task_id, ModalInput(body.prompt, body.mask_url))
    return submitted(task)
