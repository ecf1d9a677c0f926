"""TaskService: the use cases every dialect calls. All task rules are applied here.

Two dialects asking for the same thing get the same behaviour because they call the same method:
what may follow what, who may see which task, what it costs, when a modal window closes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from journeyd.clock import Clock
from journeyd.domain.buttons import ENDPOINT_KINDS, Plan, parse_custom_id, plan_for, plan_named
from journeyd.domain.errors import Conflict, InvalidRequest, NotFound, RateLimited
from journeyd.domain.ids import IdGenerator, task_id_from_job
from journeyd.domain.keys import ApiKey, Charge
from journeyd.domain.lifecycle import Action, Op, Speed, Status
from journeyd.domain.pricing import PriceTable
from journeyd.domain.prompt import PromptSpec, parse_prompt, parse_speed, with_overrides
from journeyd.domain.task import Task
from journeyd.imaging.codec import decode_image, encode_png, to_rgb
from journeyd.imaging.masks import mask_from_image, mask_to_png_pixels
from journeyd.media.storage import ImageStore
from journeyd.store.base import Reclaimed, TaskStore

MODAL_EXPIRED = "the modal window closed before a modal was submitted; the task was cancelled and refunded"


class Fetcher(Protocol):
    def fetch(self, source: str, *, what: str = ...) -> bytes: ...


class Dispatcher(Protocol):
    def wake(self, task_id: str) -> None: ...


@dataclass(frozen=True)
class Caller:
    """Who is asking: an API key, or the local operator on loopback when no key exists."""

    key: ApiKey | None = None

    @property
    def owner(self) -> str | None:
        return self.key.id if self.key else None


@dataclass(frozen=True)
class Limits:
    modal_timeout_ms: int = 1_800_000
    max_queued_per_key: int = 50
    max_image_pixels: int = 40_000_000
    max_output_pixels: int = 16_777_216
    max_attempts: int = 3


class TaskService:
    def __init__(
        self,
        store: TaskStore,
        images: ImageStore,
        fetcher: Fetcher,
        dispatcher: Dispatcher,
        *,
        clock: Clock,
        ids: IdGenerator,
        prices: PriceTable | None = None,
        limits: Limits | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.images = images
        self.fetcher = fetcher
        self.dispatcher = dispatcher
        self.clock = clock
        self.ids = ids
        self.prices = prices or PriceTable()
        self.limits = limits or Limits()
        self._rng = rng or random.Random()

    # --- reading ---------------------------------------------------------------------------------
    def get(self, caller: Caller, task_id: str) -> Task:
        """A task the caller owns; any other id (unknown or someone else's) is a 404."""
        task = self.store.get_task(task_id)
        if task is None or task.owner != caller.owner:
            raise NotFound(f"task {task_id} not found")
        return task

    def resolve_custom_id(self, custom_id: str) -> str:
        """The task id a customId belongs to (its job UUID), for requests that send only a customId."""
        task_id = task_id_from_job(parse_custom_id(custom_id).job)
        if task_id is None:
            raise NotFound(f"custom_id {custom_id!r} does not belong to any task here")
        return task_id

    # --- submitting ------------------------------------------------------------------------------
    def imagine(
        self,
        caller: Caller,
        prompt: str,
        *,
        overrides: dict[str, Any] | None = None,
        image_urls: Sequence[str] = (),
        metadata: Any = None,
    ) -> Task:
        spec = with_overrides(parse_prompt(prompt), **(overrides or {}))
        if not spec.text and not spec.image_urls and not image_urls:
            raise InvalidRequest("prompt is empty: describe the image to imagine")
        self._check_queue(caller)
        task_id = self.ids.new()
        sources = [*spec.image_urls, *image_urls]
        keys = [self._store_image_prompt(task_id, i, url) for i, url in enumerate(sources)]
        task = self._new_task(
            caller,
            task_id=task_id,
            args={"image_prompts": keys} if keys else None,
            action=Action.IMAGINE,
            op=Op.GENERATE,
            prompt=prompt,
            spec=spec,
            price_name="imagine",
            speed=Speed(spec.speed or Speed.RELAX),
            seed=spec.seed if spec.seed is not None else self._seed(),
            metadata=metadata,
        )
        self._insert(task, caller, cleanup=bool(keys))
        return task

    def press(
        self,
        caller: Caller,
        task_id: str,
        *,
        custom_id: str | None = None,
        name: str | None = None,
        index: int | None = None,
        speed: str | None = None,
        metadata: Any = None,
        zoom_ratio: float | None = None,
        direction: str | None = None,
    ) -> Task:
        """Press a button on a finished task: by customId, or by an action name and tile index."""
        parent = self.get(caller, task_id)
        self._check_ready(parent)
        assert parent.result is not None
        if custom_id:
            cid = parse_custom_id(custom_id)
            if cid.job != parent.job:
                raise InvalidRequest(
                    f"custom_id {custom_id!r} belongs to another task; use a customId from task {parent.id}'s buttons"
                )
            if name is not None and cid.kind not in ENDPOINT_KINDS[name]:
                raise InvalidRequest(f"custom_id {custom_id!r} is not a {name} button")
            plan = plan_for(cid)
        elif name:
            plan = plan_named(
                name, index=index, parent_kind=parent.result.kind, zoom_ratio=zoom_ratio, direction=direction
            )
        else:
            raise InvalidRequest("say which button to press: send custom_id, or task_id with index")
        self._check_parent_kind(parent, plan)
        return self._child(caller, parent, plan, speed=speed, metadata=metadata)

    def modal(self, caller: Caller, task_id: str, *, prompt: str | None = None, mask: str | None = None) -> Task:
        """Finish a MODAL task (Vary (Region) or Custom Zoom) with a prompt and, for Region, a mask."""
        task = self.get(caller, task_id)
        if task.status is not Status.MODAL:
            if task.status is Status.CANCELLED and task.fail_reason == MODAL_EXPIRED:
                raise Conflict(f"task {task.id}: {MODAL_EXPIRED}")
            raise Conflict(
                f"task {task.id} is {task.status.value}, not waiting for a modal; "
                "modal finishes a task created by inpaint (Vary (Region)) or Custom Zoom"
            )
        parent = self.store.get_task(task.parent_id or "")
        if parent is None or parent.result is None:
            raise Conflict(f"task {task.id}'s parent image is gone")
        text = prompt if prompt and prompt.strip() else parent.prompt
        spec = parse_prompt(text).inherit(parent.spec)
        args = dict(task.args)
        mask_key = None
        if task.op is Op.VARY_REGION:
            if not mask:
                raise InvalidRequest(
                    "Vary (Region) needs a mask: send mask_url (white = repaint, black or "
                    "transparent = keep) as a URL, a data URL or base64"
                )
            size = (parent.result.width, parent.result.height)
            image = decode_image(
                self.fetcher.fetch(mask, what="mask_url"), what="mask_url", max_pixels=self.limits.max_image_pixels
            )
            pixels = mask_from_image(image, size, what="mask_url")
            mask_key = f"{task.id}/mask.png"
            self.images.put(mask_key, encode_png(mask_to_png_pixels(pixels)))
            args["mask"] = mask_key
        else:
            args.update(self._custom_zoom_args(spec, parent))
            spec = replace(spec, zoom=None)
        charge = self._quote(caller, "modal", spec, task.speed)
        try:
            submitted = self.store.submit_modal(
                task.id, self.clock.now_ms(), prompt=text, spec=spec, args=args, charge=charge
            )
        except BaseException:
            self._forget(mask_key)
            raise
        if submitted is None:
            self._forget(mask_key)
            raise Conflict(f"task {task.id}: {MODAL_EXPIRED}")
        self.dispatcher.wake(submitted.id)
        return submitted

    def cancel(self, caller: Caller, task_id: str) -> Task:
        task = self.get(caller, task_id)
        if task.status.terminal:
            raise Conflict(f"task {task.id} already ended ({task.status.value}); there is nothing to cancel")
        cancelled = self.store.cancel(task.id, self.clock.now_ms(), "cancelled by request")
        assert cancelled is not None
        return cancelled

    # --- upkeep (called by the sweeper) --------------------------------------------------------
    def expire_modals(self) -> list[str]:
        return self.store.expire_modals(self.clock.now_ms(), MODAL_EXPIRED)

    def reclaim(self, *, every_lease: bool = False) -> Reclaimed:
        reclaimed = self.store.reclaim(self.clock.now_ms(), self.limits.max_attempts, every_lease=every_lease)
        for task_id in reclaimed.requeued:
            self.dispatcher.wake(task_id)
        return reclaimed

    # --- rules -----------------------------------------------------------------------------------
    def _check_ready(self, parent: Task) -> None:
        if parent.status is Status.SUCCESS and parent.result is not None:
            return
        if parent.status.terminal:
            raise Conflict(f"task {parent.id} ended in {parent.status.value}; it has no images to act on")
        raise Conflict(f"task {parent.id} is still {parent.status.value}; wait until it succeeds")

    @staticmethod
    def _check_parent_kind(parent: Task, plan: Plan) -> None:
        assert parent.result is not None
        if plan.needs == "single" and parent.result.kind != "single":
            raise InvalidRequest("This action requires an upscaled task.")
        if plan.needs == "grid" and parent.result.kind != "grid":
            raise InvalidRequest("This action requires a four-image grid task (U1-U4, V1-V4 and 🔄 act on grids).")
        if plan.needs == "grid" and plan.op is not None and not 1 <= plan.index <= len(parent.result.images):
            raise InvalidRequest(f"index must be from 1 to 4, got {plan.index}")

    def _check_queue(self, caller: Caller) -> None:
        limit = self.limits.max_queued_per_key
        if limit and self.store.queued_count(caller.owner) >= limit:
            raise RateLimited(f"you already have {limit} tasks queued or running; wait for some to finish")

    def _check_output_size(self, parent: Task, plan: Plan) -> None:
        assert parent.result is not None
        factor = plan.args.get("factor")
        if plan.op in (Op.UPSCALE_SUBTLE, Op.UPSCALE_CREATIVE) and factor:
            width, height = parent.result.width * factor, parent.result.height * factor
            if width * height > self.limits.max_output_pixels:
                raise InvalidRequest(
                    f"upscaling would make a {width}x{height} image; the limit is "
                    f"{self.limits.max_output_pixels / 1e6:.0f} megapixels"
                )

    def _custom_zoom_args(self, spec: PromptSpec, parent: Task) -> dict[str, Any]:
        assert parent.result is not None
        if spec.zoom is None:
            raise InvalidRequest("Custom Zoom needs --zoom with a value from 1 to 2 in the prompt, e.g. --zoom 1.5")
        aspect = list(spec.aspect) if spec.aspect else None
        same_shape = aspect is None or aspect[0] * parent.result.height == aspect[1] * parent.result.width
        if spec.zoom == 1 and same_shape:
            raise InvalidRequest(
                "--zoom 1 with the same aspect ratio leaves nothing to paint; use --zoom above 1 or a new --ar"
            )
        return {"zoom": spec.zoom, "square": False, "aspect": aspect}

    # --- plumbing --------------------------------------------------------------------------------
    def _child(self, caller: Caller, parent: Task, plan: Plan, *, speed: str | None, metadata: Any) -> Task:
        assert parent.result is not None
        self._check_output_size(parent, plan)
        if plan.op is None:  # reroll: the parent's own op again, from the same source, with a new seed
            op, args, index = parent.op, dict(parent.args), parent.source_index
        else:
            op, args, index = plan.op, dict(plan.args), plan.index
            args["source"] = parent.result.images[index - 1 if parent.result.kind == "grid" else 0]
        if not plan.modal:
            self._check_queue(caller)
        task = self._new_task(
            caller,
            action=plan.action,
            op=op,
            prompt=parent.prompt,
            spec=parent.spec,
            price_name=plan.price_name,
            speed=Speed(parse_speed(speed)) if speed else parent.speed,
            seed=parent.seed if op is Op.PICK else self._seed(),
            metadata=metadata,
            parent=parent,
            source_index=index,
            args=args,
            modal=plan.modal,
        )
        self._insert(task, caller)
        return task

    def _new_task(
        self,
        caller: Caller,
        *,
        action: Action,
        op: Op,
        prompt: str,
        spec: PromptSpec,
        price_name: str,
        speed: Speed,
        seed: int,
        metadata: Any,
        parent: Task | None = None,
        source_index: int = 1,
        args: dict[str, Any] | None = None,
        modal: bool = False,
        task_id: str | None = None,
    ) -> Task:
        now = self.clock.now_ms()
        return Task(
            id=task_id or self.ids.new(),
            owner=caller.owner,
            action=action,
            op=op,
            status=Status.MODAL if modal else Status.SUBMITTED,
            prompt=prompt,
            spec=spec,
            speed=speed,
            seed=seed,
            price_name=price_name,
            created_at=now,
            updated_at=now,
            parent_id=parent.id if parent else None,
            source_index=source_index,
            args=args or {},
            metadata=metadata,
            modal_deadline=now + self.limits.modal_timeout_ms if modal else None,
        )

    def _insert(self, task: Task, caller: Caller, *, cleanup: bool = False) -> None:
        charge = self._quote(caller, task.price_name, task.spec, task.speed)
        try:
            self.store.insert_task(task, charge)
        except BaseException:
            if cleanup:
                self.images.delete_task(task.id)
            raise
        if task.status is Status.SUBMITTED:
            self.dispatcher.wake(task.id)

    def _quote(self, caller: Caller, action: str, spec: PromptSpec, speed: Speed) -> Charge | None:
        if caller.key is None:
            return None  # the local operator on loopback is not metered
        quote = self.prices.quote(action, spec.model_version, speed.value)
        if quote is None:
            return None
        step = "modal" if action == "modal" else "submit"
        return Charge(caller.key.id, step, quote.key, quote.amount)

    def _store_image_prompt(self, task_id: str, index: int, source: str) -> str:
        try:
            image = decode_image(
                self.fetcher.fetch(source, what="image_urls"),
                what=f"image_urls[{index}]",
                max_pixels=self.limits.max_image_pixels,
            )
            key = f"{task_id}/input-{index}.png"
            self.images.put(key, encode_png(to_rgb(image)))
        except BaseException:
            self.images.delete_task(task_id)
            raise
        return key

    def _forget(self, key: str | None) -> None:
        if key:
            self.images.delete(key)

    def _seed(self) -> int:
        return self._rng.randrange(0, 2**32)
