"""The midjourney-proxy dialect (`/mj/...`, Plus / trueai shape), as new-api, one-api,
chatgpt-web-midjourney-proxy and ChatGPT-Midjourney call it.

A translation table, checkable against `trueai-org/midjourney-proxy` and the clients' sources:
- submit answers `{code, description, result, properties}`: 1 submitted, 21 waiting for a modal,
  22 queued (`numberOfQueues`), 23 queue full, 24 banned prompt (`bannedWord`), 3 unknown task,
  4 anything else the client got wrong, 9 our failure. `result` is always a string or null and
  `properties` always an object; the HTTP status is 200 on success and the specific 4xx otherwise.
- task JSON decodes into new-api's Go structs: string ids and enums, `progress` "45%", integer
  millisecond times, string `properties.finalPrompt`; SUCCESS is at "100%" and a failed task always
  has a `failReason` (new-api stops polling on nothing else).
- `/mj-fast/mj/...`, `/mj-relax/mj/...`, `/mj-turbo/mj/...` choose the speed.
JSON is compact (orjson): new-api rewrites `"code":22` to `"code":1` by text replacement.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Callable
from typing import Annotated, Any, Literal

import anyio
import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from journeyd.api.auth import caller_of
from journeyd.api.errors import JsonResponse, dialect_route
from journeyd.api.fields import ClientText, HookUrl
from journeyd.api.idempotency import IDEMPOTENT
from journeyd.api.openapi import CHANGE, EXAMPLE_MASK, LIST, READ, STATUS_MEANINGS, SUBMIT, documented, link
from journeyd.api.urls import image_base
from journeyd.domain.errors import (
    InternalError,
    InvalidRequest,
    JourneydError,
    NotFound,
    RateLimited,
    StorageUnavailable,
)
from journeyd.domain.lifecycle import MIDJOURNEY_STATUS, Action, Status
from journeyd.domain.moderation import BannedPrompt
from journeyd.domain.prompt import parse_prompt
from journeyd.domain.task import ClientData, Hook, Task
from journeyd.feed import Change, TaskFeed, parse_cursor
from journeyd.service import MAX_LISTED_TASKS, ModalInput, TaskService

log = logging.getLogger("journeyd.api")
SPEED_PREFIXES = {"/mj": None, "/mj-fast/mj": "fast", "/mj-relax/mj": "relax", "/mj-turbo/mj": "turbo"}
CHANGE_ACTIONS = {"UPSCALE": "upscale", "VARIATION": "variation", "REROLL": "reroll"}
UNSUPPORTED = ("edits", "retexture", "video", "upload-discord-images")
IMAGINE_ALL = "PicReader::all"  # 🎉Imagine all: four tasks, their ids joined with commas in `result` (as trueai does)
WAITING_FOR_MODAL = "Waiting for window confirm"  # chatgpt-web-midjourney-proxy looks for "confirm"
MAX_PAGE = 100  # tasks in one page of /task/list
NEWS_S = 0.05  # how often an event stream asks the store (in memory) whether any task changed
LIST_BODY_BYTES = 256 * 1024  # room for MAX_LISTED_TASKS ids: a bigger body is refused before it is parsed


def _result(
    code: int, description: str, result: str | None = None, status: int = 200, **properties: Any
) -> JsonResponse:
    return JsonResponse(
        {"code": code, "description": description, "result": result, "properties": properties}, status_code=status
    )


def owns(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in SPEED_PREFIXES)


def render_error(error: JourneydError) -> JsonResponse:
    if isinstance(error, BannedPrompt):
        return _result(
            24, error.message, status=error.status, bannedWord=error.details.get("banned_word", ""), promptEn=""
        )
    if isinstance(error, NotFound):
        return _result(3, error.message, status=error.status)
    if isinstance(error, RateLimited):
        return _result(23, error.message, status=error.status)
    if isinstance(error, InternalError):
        return _result(9, error.message, status=error.status)
    return _result(4, error.message, status=error.status, **error.details)


router = APIRouter(
    route_class=dialect_route(render_error),
    tags=["midjourney-proxy"],
    generate_unique_id_function=lambda route: f"mj_{route.name}",
)


BODY_LIMITS: dict[str, int] = {}  # paths that take only small bodies, and their limit (see api/limits.py)


def route(
    method: str, path: str, *, max_body_bytes: int | None = None, **options: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register an endpoint under /mj and under each speed prefix (only /mj is in the OpenAPI document)."""

    def register(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        for prefix in SPEED_PREFIXES:
            router.add_api_route(
                prefix + path, endpoint, methods=[method], include_in_schema=prefix == "/mj", **options
            )
            if max_body_bytes is not None:
                BODY_LIMITS[prefix + path] = max_body_bytes
        return endpoint

    return register


# --- requests ------------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")
    state: ClientText | None = Field(None, description="Echoed back in the task")
    notifyHook: HookUrl | None = Field(None, description="Every update of the task is posted here")


class MjImagineBody(_Body):
    prompt: str = Field(..., description="Midjourney prompt")
    base64Array: list[str] = Field(default_factory=list, max_length=5, description="Image prompts, base64 or data URLs")
    botType: Literal["MID_JOURNEY", "NIJI_JOURNEY"] | None = None
    accountFilter: dict[str, Any] | None = Field(None, description="modes: [RELAX|FAST|TURBO] picks the speed")


class MjChangeBody(_Body):
    taskId: str
    action: Literal["UPSCALE", "VARIATION", "REROLL"]
    index: int | None = Field(None, ge=0, le=4)


class MjSimpleChangeBody(_Body):
    content: str = Field(..., description='"<taskId> U1".."U4", "V1".."V4" or "R"')


class MjActionBody(_Body):
    taskId: str
    customId: str


class MjModalBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    taskId: str
    prompt: str | None = Field(None, description="Empty uses the parent's prompt; Custom Zoom takes --zoom 1..2")
    maskBase64: str | None = Field(None, description="Vary (Region): black background, white where to repaint")


class MjDescribeBody(_Body):
    base64: str | None = Field(None, description="The image to describe: base64 or a data URL")
    link: str | None = Field(None, description="Or its http(s) URL")
    accountFilter: dict[str, Any] | None = Field(None, description="modes: [RELAX|FAST|TURBO] picks the speed")


class MjBlendBody(_Body):
    base64Array: list[str] = Field(..., description="2 to 5 images, base64 or data URLs")
    dimensions: str | None = Field(None, description="PORTRAIT (2:3), SQUARE (1:1, the default) or LANDSCAPE (3:2)")
    botType: Literal["MID_JOURNEY", "NIJI_JOURNEY"] | None = None
    accountFilter: dict[str, Any] | None = Field(None, description="modes: [RELAX|FAST|TURBO] picks the speed")


class MjShortenBody(_Body):
    prompt: str = Field(..., description="The prompt to analyse")
    botType: Literal["MID_JOURNEY", "NIJI_JOURNEY"] | None = None
    accountFilter: dict[str, Any] | None = Field(None, description="modes: [RELAX|FAST|TURBO] picks the speed")


class MjIdsBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ids: list[StrictStr | StrictInt] = Field(default_factory=list, max_length=MAX_LISTED_TASKS)


# --- responses -----------------------------------------------------------------------------------
class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitResult(_Answer):
    """Every answer that is not a task: submits, cancel, image-seed, and errors (with their 4xx)."""

    code: int = Field(
        ...,
        description="1 submitted, 21 waiting for a modal, 22 queued, 23 queue full, 24 banned prompt, "
        "3 unknown task, 4 a request journeyd cannot take, 9 journeyd's own failure",
    )
    description: str
    result: str | None = Field(..., description="The task id, or the seed for image-seed")
    properties: dict[str, Any] = Field(..., description="finalPrompt, numberOfQueues, bannedWord, price, ...")


class MjButton(_Answer):
    customId: str
    emoji: str
    label: str
    type: int
    style: int


class MjUrl(_Answer):
    url: str


class MjTaskProperties(_Answer):
    finalPrompt: str
    finalZhPrompt: str
    notifyHook: str
    engine: str
    version: int = Field(..., description="Grows with every change of the task: tells two states of it apart")
    maskUrl: str = Field(..., description='Vary (Region): the mask it repainted (white = repaint); "" otherwise')
    featherPx: int = Field(..., description="Vary (Region), Zoom, Pan: the width of the seam's feather; 0 otherwise")
    changedBeyondFeather: list[int] = Field(
        ...,
        description="Vary (Region), Zoom, Pan: per image, how many pixels beyond the feather differ from the "
        "parent, measured by journeyd on the saved images (0 each: the rest is the parent's, bit for bit); "
        "[] otherwise",
    )


class MjTask(_Answer):
    id: str = Field(..., description="The numeric task id")
    action: str
    customId: str
    botType: Literal["MID_JOURNEY", "NIJI_JOURNEY"]
    prompt: str
    promptEn: str
    description: str
    state: str
    submitTime: int
    startTime: int
    finishTime: int
    imageUrl: str
    imageUrls: list[MjUrl]
    videoUrl: str
    videoUrls: list[MjUrl]
    status: Literal["SUBMITTED", "IN_PROGRESS", "SUCCESS", "FAILURE", "MODAL", "CANCEL"]
    progress: str = Field(..., description='"45%"; "100%" once the task ended')
    failReason: str
    buttons: list[MjButton]
    maskBase64: str
    seed: str
    mode: Literal["RELAX", "FAST", "TURBO"]
    parentId: str
    width: int
    height: int
    properties: MjTaskProperties


NEW_TASK = "$response.body#/result"
TASK_LINKS = {  # what a client does next with the task a submit made
    "fetch": link("mj_fetch", "Poll the new task", id=NEW_TASK),
    "cancel": link("mj_cancel", "Cancel it", id=NEW_TASK),
    "change": link("mj_change", "U1 on it", body_taskId=NEW_TASK, body_action="UPSCALE", body_index=1),
    "modal": link(
        "mj_modal",
        "The mask for a task waiting for a modal (code 21)",
        body_taskId=NEW_TASK,
        body_prompt="a small boat",
        body_maskBase64=EXAMPLE_MASK,
    ),
}
BUTTON_LINKS = {
    "action": link(
        "mj_action",
        "Press its first button",
        body_taskId="$response.body#/id",
        body_customId="$response.body#/buttons/0/customId",
    ),
}


# --- presenting ----------------------------------------------------------------------------------
def _description(task: Task, parent_number: str) -> str:
    if task.status is Status.MODAL:
        return WAITING_FOR_MODAL
    if task.action is Action.IMAGINE:
        return f"/imagine {task.prompt}"
    if task.action is Action.DESCRIBE:
        return f"/describe {task.number}.png"
    if task.action is Action.BLEND:
        return f"/blend {task.number} {len(task.args.get('images', []))}"
    if task.action is Action.SHORTEN:
        return f"/shorten {task.prompt}"
    code = {Action.UPSCALE: f"U{task.source_index}", Action.VARIATION: f"V{task.source_index}", Action.REROLL: "R"}.get(
        task.action, task.action.value.lower()
    )
    return f"/up {parent_number} {code}"


def task_json(task: Task, images: str, parent_number: str = "") -> dict[str, Any]:
    """The Task as midjourney-proxy shows it (fetch, lists, notifyHook); `images` is the image base URL."""
    result = task.result
    failed = task.status in (Status.FAILURE, Status.CANCELLED)
    return {
        "id": str(task.number),
        "action": task.action.value,
        "customId": task.args.get("custom_id", ""),
        "botType": "NIJI_JOURNEY" if task.spec.niji else "MID_JOURNEY",
        # a describe's prompt is what it wrote (midjourney-proxy's; pressing "🎉Imagine all" there reads it back)
        "prompt": task.final_prompt if task.action is Action.DESCRIBE else task.prompt,
        "promptEn": task.spec.render() if task.action is Action.SHORTEN else task.final_prompt,
        "description": _description(task, parent_number),
        "state": task.client.state or "",
        "submitTime": task.created_at,
        "startTime": task.started_at or 0,
        "finishTime": task.finished_at or 0,
        # while it runs, the latest step preview, as midjourney-proxy shows Discord's progress image
        "imageUrl": _image_url(task, images),
        "imageUrls": [{"url": f"{images}/{key}"} for key in result.images] if result else [],
        "videoUrl": "",
        "videoUrls": [],
        "status": MIDJOURNEY_STATUS[task.status],
        "progress": "100%" if task.status.terminal else f"{task.progress}%",
        "failReason": (task.fail_reason or task.status.value) if failed else "",
        "buttons": [
            {"customId": b.custom_id, "emoji": b.emoji, "label": b.label, "type": 2, "style": b.style}
            for b in task.buttons
        ],
        "maskBase64": "",
        "seed": str(task.seed),
        "mode": task.speed.value.upper(),
        "parentId": parent_number,
        "width": result.width if result else 0,
        "height": result.height if result else 0,
        "properties": {
            "finalPrompt": task.final_prompt,
            "finalZhPrompt": "",
            "notifyHook": task.client.hook.url if task.client.hook and task.client.hook.format == "mj" else "",
            "engine": task.engine or "",
            "version": task.version,
            "maskUrl": f"{images}/{task.args['mask']}" if "mask" in task.args else "",
            "featherPx": result.feather_px if result else 0,
            "changedBeyondFeather": list(result.changed_beyond_feather) if result else [],
        },
    }


def _image_url(task: Task, images: str) -> str:
    """The result's grid or image (a describe's: the image it described; a shorten has none) or, while the
    task runs, the latest step preview, as midjourney-proxy shows Discord's progress image."""
    if task.result is not None:
        return f"{images}/{task.result.grid}" if task.result.grid else ""
    return f"{images}/{task.preview}" if task.preview else ""


def webhook_renderer(service: TaskService) -> Callable[[Task, str], dict[str, Any]]:
    """notifyHook payloads: the full Task JSON, as midjourney-proxy posts it."""

    def render(task: Task, images: str) -> dict[str, Any]:
        parent = service.parent(task)
        return task_json(task, images, str(parent.number) if parent else "")

    return render


def _service(request: Request) -> TaskService:
    return request.app.state.service


def _speed(request: Request, account_filter: dict[str, Any] | None = None) -> str | None:
    for prefix, speed in SPEED_PREFIXES.items():
        if speed and request.url.path.startswith(prefix + "/"):
            return speed
    modes = (account_filter or {}).get("modes") or []
    return str(modes[0]).lower() if modes and str(modes[0]).lower() in ("relax", "fast", "turbo") else None


def _client(body: _Body) -> ClientData:
    return ClientData(state=body.state, hook=Hook(body.notifyHook, "mj") if body.notifyHook else None)


def _view(task: Task, request: Request) -> dict[str, Any]:
    parent = _service(request).parent(task)
    return task_json(task, image_base(request), str(parent.number) if parent else "")


def _submitted(task: Task, request: Request) -> JsonResponse:
    if task.status is Status.MODAL:  # a picked prompt (after describe/shorten) is shown for confirming, as Zoom's
        final = "" if task.action is Action.INPAINT else task.final_prompt
        return _result(21, WAITING_FOR_MODAL, str(task.number), finalPrompt=final, remix=True)
    ahead = _service(request).tasks_ahead(task)
    if ahead:
        return _result(22, f"In queue, {ahead} tasks ahead", str(task.number), numberOfQueues=ahead)
    return _result(1, "Submit success", str(task.number))


# --- routes: tasks -----------------------------------------------------------------------------------
@route(
    "GET", "/task/{id}/fetch", summary="A task", responses=documented(MjTask, SubmitResult, READ, links=BUTTON_LINKS)
)
async def fetch(id: str, request: Request) -> JsonResponse:
    return JsonResponse(_view(_service(request).get(caller_of(request), id), request))


@route(
    "POST",
    "/task/list-by-condition",
    summary=f"Tasks by id (a bare array, only the caller's known ids; at most {MAX_LISTED_TASKS} ids)",
    max_body_bytes=LIST_BODY_BYTES,
    responses=documented(list[MjTask], SubmitResult, (*LIST, 413)),
)
def list_by_condition(body: MjIdsBody, request: Request) -> JsonResponse:
    tasks = _service(request).get_many(caller_of(request), [str(i) for i in body.ids])
    return JsonResponse([_view(task, request) for task in tasks])


route(
    "POST",
    "/task/list-by-ids",
    summary="Alias of list-by-condition",
    max_body_bytes=LIST_BODY_BYTES,
    name="list_by_ids",
    responses=documented(list[MjTask], SubmitResult, (*LIST, 413)),
)(list_by_condition)


@route(
    "GET",
    "/task/list",
    summary=f"The caller's latest tasks, newest first, {MAX_PAGE} at most; `before` pages back through the rest",
    description="Newest first, in the order they were submitted. For the next page, pass the `id` of the last "
    "task of this one as `before`: pages never skip or repeat a task, however many arrive meanwhile. "
    "An empty array: there are no older tasks.",
    responses=documented(list[MjTask], SubmitResult, LIST),
)
def task_list(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="How many tasks (1-100)")] = MAX_PAGE,
    before: Annotated[
        str | None, Query(max_length=64, description="A task's `id`: only tasks submitted before it")
    ] = None,
) -> JsonResponse:
    tasks = _service(request).recent(caller_of(request), limit, before=before)
    return JsonResponse([_view(task, request) for task in tasks])


SCHEMAS = "#/components/schemas/"
EVENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The stream, until the client closes it",
        "content": {
            "text/event-stream": {
                "itemSchema": {
                    "type": "object",
                    "required": ["data", "event", "id"],
                    "properties": {
                        "event": {"const": "task"},
                        "id": {"type": "string", "description": "A cursor: send it back as Last-Event-ID to resume"},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"$ref": SCHEMAS + "MjTask"},
                        },
                    },
                }
            }
        },
    },
    # The refusals come before the stream starts, as JSON: spelled out, since a model here would be
    # documented in the stream's media type.
    **{
        status: {
            "description": STATUS_MEANINGS[status],
            "content": {"application/json": {"schema": {"$ref": SCHEMAS + "SubmitResult"}}},
        }
        for status in LIST
    },
}


def _event_feed(
    request: Request,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=64,
            description="Resume: the `id` of the last event received; every change after it follows",
        ),
    ] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="Resume, as Last-Event-ID, for clients that cannot set headers")
    ] = None,
) -> TaskFeed:
    """The caller's change feed, from the cursor the client sent back, else from now: built before the
    stream starts, so a bad key or cursor is refused with a status, and 'now' is when the request came."""
    caller = caller_of(request)
    cursor = None
    if last_event_id:
        cursor = parse_cursor(last_event_id, what="Last-Event-ID")
    elif since:
        cursor = parse_cursor(since, what="since")
    return _service(request).feed(caller, cursor)


@route(
    "GET",
    "/task/events",
    summary="Server-sent events: every change of the caller's tasks, as they happen",
    description="A `text/event-stream`. Each change of one of the caller's tasks (status, progress, step "
    "preview, result) is an event `task` whose `data` is the task as `GET /mj/task/{id}/fetch` returns it "
    "and whose `id` is a cursor. To resume after a reconnect, send the last `id` received as the "
    "`Last-Event-ID` header (or `?since=`): every change after it follows, perhaps with a few already seen "
    "(tell them apart by `id` and `properties.version`). Without one, the stream starts now, with no backlog. "
    "A `: ping` comment comes every 15 s of silence.",
    response_class=EventSourceResponse,
    responses=EVENT_RESPONSES,
)
async def task_events(
    request: Request, feed: Annotated[TaskFeed, Depends(_event_feed)]
) -> AsyncIterable[ServerSentEvent]:
    poll_s: float = request.app.state.events_poll_s

    def changes() -> list[tuple[Change, dict[str, Any]]]:  # store reads: off the event loop
        return [(change, _view(change.task, request)) for change in feed.poll()]

    while True:
        try:
            batch = await run_in_threadpool(changes)
        except StorageUnavailable as error:  # the client reconnects from its cursor, and gets a 503 until it is back
            log.error("%s: %s; the stream ends", request.url.path, error)
            return
        for change, view in batch:
            yield ServerSentEvent(raw_data=orjson.dumps(view).decode(), event="task", id=str(change.cursor))
        # Read again once the store says something changed; where it cannot tell, every `poll_s`.
        waited = 0.0
        while (news := feed.news()) is False or (news is None and waited < poll_s):
            await anyio.sleep(NEWS_S)
            waited += NEWS_S


@route(
    "GET",
    "/task/queue",
    summary="The caller's queued and running tasks, in the order they run",
    responses=documented(list[MjTask], SubmitResult, LIST),
)
def task_queue(request: Request) -> JsonResponse:
    return JsonResponse([_view(task, request) for task in _service(request).queue(caller_of(request))])


@route(
    "POST",
    "/task/{id}/cancel",
    summary="Cancel a task: queued and MODAL tasks at once, running ones at the next step",
    responses=documented(SubmitResult, SubmitResult, CHANGE),
)
def cancel(id: str, request: Request) -> JsonResponse:
    task = _service(request).cancel(caller_of(request), id)
    return _result(1, "Cancelled" if task.status is Status.CANCELLED else "Cancelling", str(task.number))


@route(
    "GET",
    "/task/{id}/image-seed",
    summary="The seed of a task's images",
    responses=documented(SubmitResult, SubmitResult, READ),
)
async def image_seed(id: str, request: Request) -> JsonResponse:
    task = _service(request).get(caller_of(request), id)
    return _result(1, "success", str(task.seed))


# --- routes: submit --------------------------------------------------------------------------------
SUBMITS: dict[str, Any] = {
    "dependencies": IDEMPOTENT,
    "responses": documented(SubmitResult, SubmitResult, SUBMIT, links=TASK_LINKS),
}


@route("POST", "/submit/imagine", summary="Imagine", **SUBMITS)
def imagine(body: MjImagineBody, request: Request) -> JsonResponse:
    overrides: dict[str, Any] = {"speed": _speed(request, body.accountFilter)}
    if body.botType == "NIJI_JOURNEY":
        spec = parse_prompt(body.prompt)
        if spec.version is None and spec.niji is None:
            overrides["version"] = "niji"
    task = _service(request).imagine(
        caller_of(request), body.prompt, overrides=overrides, image_urls=body.base64Array, client=_client(body)
    )
    return _submitted(task, request)


@route(
    "POST",
    "/submit/action",
    summary="Press a button (customId); Vary (Region), Custom Zoom and a describe's or shorten's prompts answer 21",
    description="A button that needs a modal (Vary (Region), Custom Zoom, `MJ::Job::PicReader::N` after a describe, "
    "`MJ::Job::PromptAnalyzer::N` after a shorten) answers code 21 with the new task's id, which waits in MODAL "
    "until `/mj/submit/modal` confirms it (an empty prompt keeps the one shown in `properties.finalPrompt`). "
    "`MJ::Job::PicReader::all` (🎉Imagine all) queues one Imagine per prompt at once: code 1, and `result` holds "
    "their ids joined with commas, as trueai's midjourney-proxy answers it.",
    **SUBMITS,
)
def action(body: MjActionBody, request: Request) -> JsonResponse:
    if IMAGINE_ALL in body.customId:
        tasks = _service(request).imagine_all(
            caller_of(request), body.taskId, custom_id=body.customId, speed=_speed(request), client=_client(body)
        )
        return _result(1, "Submit success", ",".join(str(task.number) for task in tasks))
    task = _service(request).press(
        caller_of(request), body.taskId, custom_id=body.customId, speed=_speed(request), client=_client(body)
    )
    return _submitted(task, request)


@route("POST", "/submit/change", summary="U1-U4, V1-V4 or reroll by action and index", **SUBMITS)
def change(body: MjChangeBody, request: Request) -> JsonResponse:
    if body.action != "REROLL" and not body.index:
        raise InvalidRequest("index is required (1-4) for UPSCALE and VARIATION")
    task = _service(request).press(
        caller_of(request),
        body.taskId,
        name=CHANGE_ACTIONS[body.action],
        index=body.index,
        speed=_speed(request),
        client=_client(body),
    )
    return _submitted(task, request)


@route("POST", "/submit/simple-change", summary='"<taskId> U2" style changes', **SUBMITS)
def simple_change(body: MjSimpleChangeBody, request: Request) -> JsonResponse:
    parts = body.content.split()
    if len(parts) != 2 or not (
        parts[1].upper() == "R" or (parts[1][:1].upper() in "UV" and parts[1][1:] in ("1", "2", "3", "4"))
    ):
        raise InvalidRequest('content must look like "<taskId> U1" (U1-U4, V1-V4 or R)')
    task_id, code = parts[0], parts[1].upper()
    name = {"U": "upscale", "V": "variation", "R": "reroll"}[code[0]]
    task = _service(request).press(
        caller_of(request),
        task_id,
        name=name,
        index=int(code[1:] or 0) or None,
        speed=_speed(request),
        client=_client(body),
    )
    return _submitted(task, request)


@route(
    "POST",
    "/submit/modal",
    summary="Finish a task waiting for a modal (mask and/or prompt); same task id",
    **SUBMITS,
)
def modal(body: MjModalBody, request: Request) -> JsonResponse:
    task = _service(request).modal(
        caller_of(request), body.taskId, ModalInput(body.prompt, body.maskBase64, mask_field="maskBase64")
    )
    return _submitted(task, request)


@route("POST", "/submit/describe", summary="Describe: four prompts for an image", **SUBMITS)
def describe(body: MjDescribeBody, request: Request) -> JsonResponse:
    if body.base64 and body.link:
        raise InvalidRequest("send the image once: base64 or link, not both")
    task = _service(request).describe(
        caller_of(request),
        body.base64 or body.link or "",
        field="base64" if body.base64 or not body.link else "link",
        speed=_speed(request, body.accountFilter),
        client=_client(body),
    )
    return _submitted(task, request)


@route("POST", "/submit/blend", summary="Blend 2 to 5 images into a grid of 4", **SUBMITS)
def blend(body: MjBlendBody, request: Request) -> JsonResponse:
    task = _service(request).blend(
        caller_of(request),
        body.base64Array,
        dimensions=body.dimensions,
        prompt="--niji" if body.botType == "NIJI_JOURNEY" else "",
        speed=_speed(request, body.accountFilter),
        client=_client(body),
    )
    return _submitted(task, request)


@route("POST", "/submit/shorten", summary="Shorten: a prompt's important words and five shorter prompts", **SUBMITS)
def shorten(body: MjShortenBody, request: Request) -> JsonResponse:
    task = _service(request).shorten(
        caller_of(request), body.prompt, speed=_speed(request, body.accountFilter), client=_client(body)
    )
    return _submitted(task, request)


def _unsupported(request: Request) -> JsonResponse:
    caller_of(request)
    name = request.url.path.rsplit("/", 1)[-1]
    raise InvalidRequest(f"{name} is not supported by journeyd's engines yet; nothing was submitted or charged")


for _name in UNSUPPORTED:
    route(
        "POST",
        f"/submit/{_name}",
        summary=f"{_name}: not supported yet (code 4)",
        name=f"submit_{_name.replace('-', '_')}",
        responses=documented(None, SubmitResult, LIST),
    )(_unsupported)
