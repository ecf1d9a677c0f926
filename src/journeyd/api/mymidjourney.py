"""The mymidjourney / ImaginePro dialect: `messageId` + `button`, as in mymidjourney.ai/docs.

A translation table: `POST /api/v1/midjourney/imagine`, `POST /api/v1/midjourney/button` and
`GET /api/v1/midjourney/message/{messageId}`. A messageId is the task's job UUID. Vary (Region) is
one step here: the mask comes with the button press. Errors are `{"success": false, "error": ...}`
with the HTTP status of the problem.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from journeyd.api.auth import caller_of
from journeyd.api.errors import JsonResponse, dialect_route
from journeyd.api.fields import ClientText, HookUrl
from journeyd.api.idempotency import IDEMPOTENT
from journeyd.api.openapi import READ, SUBMIT, documented, link
from journeyd.api.urls import image_base
from journeyd.domain.buttons import CANCEL_LABEL, LABELS, Kind, custom_id_for_label, format_custom_id
from journeyd.domain.errors import InvalidRequest, JourneydError
from journeyd.domain.ids import job_uuid
from journeyd.domain.lifecycle import Status
from journeyd.domain.task import ClientData, Hook, Task
from journeyd.service import ModalInput, TaskService

PREFIX = "/api/v1/midjourney/"
STATUS = {
    Status.SUBMITTED: "QUEUED",
    Status.MODAL: "QUEUED",  # only a task made through another dialect can wait for a modal
    Status.IN_PROGRESS: "PROCESSING",
    Status.SUCCESS: "DONE",
    Status.FAILURE: "FAIL",
    Status.CANCELLED: "FAIL",
}


def render_error(error: JourneydError) -> JsonResponse:
    return JsonResponse({"success": False, "error": error.message}, status_code=error.status)


router = APIRouter(
    route_class=dialect_route(render_error),
    tags=["mymidjourney"],
    generate_unique_id_function=lambda route: f"mymidjourney_{route.name}",
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class MmjImagineBody(_Body):
    prompt: str = Field(..., description="Midjourney prompt; an image URL first makes it an image prompt")
    ref: ClientText | None = Field(None, description="Returned with the message and its webhooks")
    webhookOverride: HookUrl | None = Field(None, description="Post every update of this message here")


class MmjButtonBody(_Body):
    messageId: str = Field(..., description="The message whose button to press")
    button: str = Field(..., description="The button label, exactly: " + ", ".join(LABELS))
    mask: str | None = Field(None, description="Vary (Region): base64 PNG/WebP, white = repaint")
    prompt: str | None = Field(None, description="Vary (Region) prompt, or a Remix prompt")
    ref: ClientText | None = None
    webhookOverride: HookUrl | None = None


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageError(_Answer):
    success: Literal[False]
    error: str


class Accepted(_Answer):
    success: Literal[True]
    messageId: str
    createdAt: str = Field(..., description="ISO 8601, UTC")


class Message(_Answer):
    messageId: str
    prompt: str
    uri: str | None = Field(..., description="The grid or image; while it runs, the latest step preview")
    images: list[str]
    progress: int = Field(..., ge=0, le=100)
    status: Literal["QUEUED", "PROCESSING", "DONE", "FAIL"]
    createdAt: str
    updatedAt: str
    buttons: list[str] = Field(..., description="Labels to press with POST /button")
    originatingMessageId: str | None
    ref: str
    error: str | None = Field(None, description="Why it failed")


MESSAGE_LINKS = {
    "message": link("mymidjourney_message", "Poll the new message", messageId="$response.body#/messageId"),
    "button": link("mymidjourney_button", "U1 on it", body_messageId="$response.body#/messageId", body_button="U1"),
}
SUBMITS: dict[str, Any] = {
    "dependencies": IDEMPOTENT,
    "responses": documented(Accepted, MessageError, SUBMIT, links=MESSAGE_LINKS),
}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _client(ref: str | None, hook: str | None) -> ClientData:
    return ClientData(ref=ref, hook=Hook(hook, "mymidjourney") if hook else None)


def accepted(task: Task) -> JsonResponse:
    return JsonResponse({"success": True, "messageId": task.job, "createdAt": _iso(task.created_at)})


def message_json(task: Task, images: str) -> dict[str, Any]:
    """The message payload, for GET /message/{id} and for webhooks; `images` is the image base URL."""
    result = task.result
    message: dict[str, Any] = {
        "messageId": task.job,
        "prompt": task.prompt,
        "uri": f"{images}/{result.grid}" if result else (f"{images}/{task.preview}" if task.preview else None),
        "images": [f"{images}/{key}" for key in result.images] if result else [],
        "progress": task.progress,
        "status": STATUS[task.status],
        "createdAt": _iso(task.created_at),
        "updatedAt": _iso(task.updated_at),
        "buttons": [button.text for button in task.buttons],
        "originatingMessageId": job_uuid(task.parent_id) if task.parent_id else None,
        "ref": task.client.ref or "",
    }
    if task.status in (Status.FAILURE, Status.CANCELLED):
        message["error"] = task.fail_reason or task.status.value
    return message


def _service(request: Request) -> TaskService:
    return request.app.state.service


@router.get(
    "/api/v1/midjourney/message/{messageId}",
    summary="A message: status, progress, image, buttons",
    responses=documented(Message, MessageError, READ),
)
async def message(messageId: str, request: Request) -> JsonResponse:
    task = _service(request).get(caller_of(request), messageId)
    return JsonResponse(message_json(task, image_base(request)))


@router.post("/api/v1/midjourney/imagine", summary="Imagine: a grid of four images", **SUBMITS)
def imagine(body: MmjImagineBody, request: Request) -> JsonResponse:
    task = _service(request).imagine(caller_of(request), body.prompt, client=_client(body.ref, body.webhookOverride))
    return accepted(task)


@router.post("/api/v1/midjourney/button", summary="Press a button of a message", **SUBMITS)
def button(body: MmjButtonBody, request: Request) -> JsonResponse:
    service, caller = _service(request), caller_of(request)
    parent = service.get(caller, body.messageId)
    if body.button.strip() == CANCEL_LABEL:
        return accepted(service.cancel(caller, parent.id))
    cid = custom_id_for_label(body.button, parent.job)
    then_modal = None
    if cid.kind is Kind.INPAINT:
        if not body.mask:
            raise InvalidRequest("Vary (Region) needs mask: base64 PNG or WebP, white where to repaint")
        then_modal = ModalInput(body.prompt, body.mask, mask_field="mask")
    elif cid.kind is Kind.CUSTOM_ZOOM:
        then_modal = ModalInput(body.prompt)
    task = service.press(
        caller,
        parent.id,
        custom_id=format_custom_id(cid),
        client=_client(body.ref, body.webhookOverride),
        prompt=body.prompt,
        then_modal=then_modal,
    )
    return accepted(task)
