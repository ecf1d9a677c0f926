"""The mymidjourney / ImaginePro dialect: `messageId` + `button`, as in mymidjourney.ai/docs.

A translation table. mymidjourney's paths: `POST /api/v1/midjourney/imagine`, `POST
/api/v1/midjourney/button` and `GET /api/v1/midjourney/message/{messageId}`; ImaginePro's current
ones, the same handlers: `POST /api/v1/nova/imagine`, `POST /api/v1/nova/button` and `GET
/api/v1/message/fetch/{messageId}`. A messageId is the task's job UUID; older examples write
`message_id` and `webhook_override`, taken too, and answers carry `message_id` beside `messageId`.
ImaginePro's structured fields (`negativePrompt`, `seed`, `width`/`height`, `steps`, `cfgScale`)
override the prompt's flags; fields this table does not know are kept as the task's metadata.
Vary (Region) is one step here: the mask comes with the button press. Errors are
`{"success": false, "error": ...}` with the HTTP status of the problem.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, Self

from fastapi import APIRouter, Request
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from journeyd.api.auth import caller_of
from journeyd.api.errors import JsonResponse, dialect_route
from journeyd.api.fields import ClientText, HookUrl, storable
from journeyd.api.idempotency import IDEMPOTENT
from journeyd.api.openapi import READ, SUBMIT, documented, link
from journeyd.api.urls import image_base
from journeyd.domain.buttons import CANCEL_LABEL, LABELS, Kind, custom_id_for_label, format_custom_id
from journeyd.domain.errors import InvalidRequest, JourneydError
from journeyd.domain.ids import job_uuid
from journeyd.domain.lifecycle import Status
from journeyd.domain.task import ClientData, Hook, Task
from journeyd.service import ModalInput, TaskService

PREFIXES = ("/api/v1/midjourney/", "/api/v1/nova/", "/api/v1/message/")  # the paths whose errors are ours
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
    # fields this table does not know are kept (as the task's metadata), not dropped
    model_config = ConfigDict(extra="allow")

    ref: ClientText | None = Field(None, description="Returned with the message and its webhooks")
    webhookOverride: HookUrl | None = Field(
        None,
        validation_alias=AliasChoices("webhookOverride", "webhook_override"),
        description="Post every update of this message here (also `webhook_override`)",
    )

    @model_validator(mode="after")
    def _extras_can_be_kept(self) -> Self:
        if self.model_extra:
            storable(self.model_extra)
        return self


class MmjImagineBody(_Body):
    prompt: str = Field(..., description="Midjourney prompt; an image URL first makes it an image prompt")
    negativePrompt: str | None = Field(None, description="What to keep out of the image (overrides --no)")
    seed: int | None = Field(None, description="Overrides --seed (0-4294967295)")
    width: int | None = Field(None, description="With height: the aspect ratio, reduced (1024x768 is --ar 4:3)")
    height: int | None = Field(None, description="With width: the aspect ratio; the engine picks the pixel size")
    steps: int | None = Field(None, description="Denoising steps of an open model (overrides --steps, 1-150)")
    cfgScale: float | None = Field(None, description="Guidance scale of an open model (overrides --cfg, 0-30)")


class MmjButtonBody(_Body):
    messageId: str = Field(
        ...,
        validation_alias=AliasChoices("messageId", "message_id"),
        description="The message whose button to press (also `message_id`)",
    )
    button: str = Field(..., description="The button label, exactly: " + ", ".join(LABELS))
    mask: str | None = Field(None, description="Vary (Region): base64 PNG/WebP, white = repaint")
    prompt: str | None = Field(None, description="Vary (Region) prompt, or a Remix prompt")


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageError(_Answer):
    success: Literal[False]
    error: str


class Accepted(_Answer):
    success: Literal[True]
    messageId: str
    message_id: str = Field(..., description="messageId again, for clients written against older examples")
    createdAt: str = Field(..., description="ISO 8601, UTC")


class Message(_Answer):
    messageId: str
    message_id: str = Field(..., description="messageId again")
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


def _submits(message: str, button: str) -> dict[str, Any]:
    """A submit route's options; its links lead to the poll and the button of the same family of paths."""
    links = {
        "message": link(message, "Poll the new message", messageId="$response.body#/messageId"),
        "button": link(button, "U1 on it", body_messageId="$response.body#/messageId", body_button="U1"),
    }
    return {"dependencies": IDEMPOTENT, "responses": documented(Accepted, MessageError, SUBMIT, links=links)}


MIDJOURNEY_SUBMITS = _submits("mymidjourney_message", "mymidjourney_button")
NOVA_SUBMITS = _submits("mymidjourney_message_fetch", "mymidjourney_nova_button")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _client(body: _Body) -> ClientData:
    hook = body.webhookOverride
    return ClientData(
        metadata=body.model_extra or None,
        ref=body.ref,
        hook=Hook(hook, "mymidjourney") if hook else None,
    )


def accepted(task: Task) -> JsonResponse:
    return JsonResponse(
        {"success": True, "messageId": task.job, "message_id": task.job, "createdAt": _iso(task.created_at)}
    )


def message_json(task: Task, images: str) -> dict[str, Any]:
    """The message payload, for GET /message/{id} and for webhooks; `images` is the image base URL."""
    result = task.result
    message: dict[str, Any] = {
        "messageId": task.job,
        "message_id": task.job,
        "prompt": task.prompt,
        "uri": (f"{images}/{result.grid}" if result.grid else None)
        if result
        else (f"{images}/{task.preview}" if task.preview else None),
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


MESSAGE: dict[str, Any] = {
    "summary": "A message: status, progress, image, buttons",
    "responses": documented(Message, MessageError, READ),
}


@router.get("/api/v1/midjourney/message/{messageId}", **MESSAGE)
@router.get("/api/v1/message/fetch/{messageId}", name="message_fetch", **MESSAGE)
async def message(messageId: str, request: Request) -> JsonResponse:
    task = _service(request).get(caller_of(request), messageId)
    return JsonResponse(message_json(task, image_base(request)))


@router.post("/api/v1/midjourney/imagine", summary="Imagine: a grid of four images", **MIDJOURNEY_SUBMITS)
@router.post("/api/v1/nova/imagine", summary="Imagine (ImaginePro)", name="nova_imagine", **NOVA_SUBMITS)
def imagine(body: MmjImagineBody, request: Request) -> JsonResponse:
    overrides = {
        "no": body.negativePrompt,
        "seed": body.seed,
        "aspect": _size(body.width, body.height),
        "steps": body.steps,
        "guidance": body.cfgScale,
    }
    task = _service(request).imagine(caller_of(request), body.prompt, overrides=overrides, client=_client(body))
    return accepted(task)


def _size(width: int | None, height: int | None) -> tuple[int, int] | None:
    if width is None and height is None:
        return None
    if width is None or height is None:
        raise InvalidRequest("width and height go together: send both (their ratio is the aspect ratio) or neither")
    return width, height


@router.post("/api/v1/midjourney/button", summary="Press a button of a message", **MIDJOURNEY_SUBMITS)
@router.post("/api/v1/nova/button", summary="Press a button (ImaginePro)", name="nova_button", **NOVA_SUBMITS)
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
        client=_client(body),
        prompt=body.prompt,
        then_modal=then_modal,
    )
    return accepted(task)
