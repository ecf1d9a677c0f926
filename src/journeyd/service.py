"""TaskService: the use cases every dialect calls. All task rules are applied here.

Two dialects asking for the same thing get the same behaviour because they call the same method:
what may follow what, who may see which task, what it costs, when a modal window closes, which
words are banned, where updates are posted.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from journeyd import metrics
from journeyd.clock import Clock
from journeyd.domain.buttons import ENDPOINT_KINDS, Plan, parse_custom_id, plan_for, plan_named
from journeyd.domain.errors import Conflict, InvalidRequest, NotFound, RateLimited
from journeyd.domain.ids import IdGenerator, parse_task_ref, task_id_from_job
from journeyd.domain.keys import ApiKey, Charge
from journeyd.domain.lifecycle import Action, Op, Speed, Status
from journeyd.domain.moderation import BannedWords
from journeyd.domain.pricing import PriceTable
from journeyd.domain.prompt import PromptSpec, parse_prompt, parse_speed, with_overrides
from journeyd.domain.task import ClientData, Hook, Task
from journeyd.imaging.codec import decode_image, encode_png, to_rgb
from journeyd.imaging.masks import mask_from_image, mask_to_png_pixels
from journeyd.media.storage import ImageStore
from journeyd.store.base import DuplicateNumber, Reclaimed, TaskStore

MODAL_EXPIRED = "the modal window closed before a modal was submitted; the task was cancelled and refunded"
HOOK_FIELDS = {"mj": "notifyHook", "mymidjourney": "webhookOverride"}
NO_CLIENT_DATA = ClientData()


class Fetcher(Protocol):
    def fetch(self, source: str, *, what: str = ...) -> bytes: ...

    def check_url(self, url: str, *, what: str) -> None: ...


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


@dataclass(frozen=True)
class ModalInput:
    """What a modal adds to a MODAL task: the prompt and, for Vary (Region), the mask."""

    prompt: str | None = None
    mask: str | None = None  # URL, data URL or base64
    mask_field: str = "mask_url"  # the request field it came in, for error messages


@dataclass(frozen=True)
class _Modal:
    prompt: str
    spec: PromptSpec
    args: dict[str, Any]
    mask_key: str | None


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
        banned: BannedWords | None = None,
        hooks: Fetcher | None = None,
        default_hook: Hook | None = None,
        check_prompt: Callable[[PromptSpec], None] | None = None,
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
        self.banned = banned or BannedWords()
        self.hooks = hooks or fetcher  # checks webhook URLs under the webhooks' own rules
        self.default_hook = default_hook
        self.check_prompt = check_prompt or (lambda spec: None)  # the engine refuses what it cannot draw
        self._rng = rng or random.Random()

    # --- reading ---------------------------------------------------------------------------------
    def get(self, caller: Caller, ref: str) -> Task:
        """A task the caller owns, named in any of its forms; anything else is a 404."""
        task = self._find(ref)
        if task is None or task.owner != caller.owner:
            raise NotFound(f"task {ref} not found")
        return task

    def get_many(self, caller: Caller, refs: Sequence[str]) -> list[Task]:
        """The caller's tasks among `refs`, in that order; unknown and foreign ones are left out."""
        found = []
        for ref in refs:
            task = self._find(ref) if isinstance(ref, str) else None
            if task is not None and task.owner == caller.owner:
                found.append(task)
        return found

    def parent(self, task: Task) -> Task | None:
        """The task whose button made `task` (visible to whoever can see `task`)."""
        return self.store.get_task(task.parent_id) if task.parent_id else None

    def recent(self, caller: Caller, limit: int = 100) -> list[Task]:
        return self.store.list_tasks(caller.owner, limit=limit)

    def queue(self, caller: Caller) -> list[Task]:
        """The caller's tasks waiting or running, in the order they run."""
        return self.store.list_tasks(caller.owner, statuses=(Status.IN_PROGRESS, Status.SUBMITTED), limit=1000)

    def tasks_ahead(self, task: Task) -> int:
        return self.store.queue_position(task.id) if task.status is Status.SUBMITTED else 0

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
        client: ClientData = NO_CLIENT_DATA,
    ) -> Task:
        spec = with_overrides(parse_prompt(prompt), **(overrides or {}))
        if not spec.text and not spec.image_urls and not image_urls:
            raise InvalidRequest("prompt is empty: describe the image to imagine")
        self.banned.check(prompt)
        self.check_prompt(spec)
        client = self._client(client)
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
            client=client,
        )
        self._insert(task, caller, cleanup=bool(keys))
        return task

    def press(
        self,
        caller: Caller,
        ref: str,
        *,
        custom_id: str | None = None,
        name: str | None = None,
        index: int | None = None,
        speed: str | None = None,
        client: ClientData = NO_CLIENT_DATA,
        zoom_ratio: float | None = None,
        direction: str | None = None,
        prompt: str | None = None,
        then_modal: ModalInput | None = None,
    ) -> Task:
        """Press a button on a finished task: by customId, or by an action name and tile index.

        `prompt` is a Remix prompt for the buttons that make new pixels. `then_modal` finishes a
        button that needs a modal (Vary (Region), Custom Zoom) in the same step, as mymidjourney
        does; without it such a task waits in MODAL.
        """
        parent = self.get(caller, ref)
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
        return self._child(
            caller, parent, plan, speed=speed, client=client, prompt=prompt, then_modal=then_modal, custom_id=custom_id
        )

    def modal(self, caller: Caller, ref: str, modal: ModalInput) -> Task:
        """Finish a MODAL task (Vary (Region) or Custom Zoom) with a prompt and, for Region, a mask."""
        task = self.get(caller, ref)
        if task.status is not Status.MODAL:
            if task.status is Status.CANCELLED and task.fail_reason == MODAL_EXPIRED:
                raise Conflict(f"task {task.id}: {MODAL_EXPIRED}")
            raise Conflict(
                f"task {task.id} is {task.status.value}, not waiting for a modal; "
                "modal finishes a task created by inpaint (Vary (Region)) or Custom Zoom"
            )
        parent = self.parent(task)
        if parent is None or parent.result is None:
            raise Conflict(f"task {task.id}'s parent image is gone")
        inputs = self._modal_inputs(task.id, task.op, task.args, parent, modal)
        charge = self._quote(caller, "modal", inputs.spec, task.speed)
        try:
            submitted = self.store.submit_modal(
                task.id, self.clock.now_ms(), prompt=inputs.prompt, spec=inputs.spec, args=inputs.args, charge=charge
            )
        except BaseException:
            self._forget(inputs.mask_key)
            raise
        if submitted is None:
            self._forget(inputs.mask_key)
            raise Conflict(f"task {task.id}: {MODAL_EXPIRED}")
        self.dispatcher.wake(submitted.id)
        return submitted

    def cancel(self, caller: Caller, ref: str) -> Task:
        task = self.get(caller, ref)
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
        metrics.leases_reclaimed(len(reclaimed.requeued), len(reclaimed.failed))
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

    def _client(self, client: ClientData) -> ClientData:
        """Check the hook URL now (scheme, port, public address), so a bad one is a 4xx at submit,
        and fall back to the operator's default hook."""
        if client.hook is None:
            return replace(client, hook=self.default_hook) if self.default_hook else client
        self.hooks.check_url(client.hook.url, what=HOOK_FIELDS[client.hook.format])
        return client

    def _modal_inputs(self, task_id: str, op: Op, args: dict[str, Any], parent: Task, modal: ModalInput) -> _Modal:
        """Prompt, spec and arguments a modal gives a task; stores the mask, whose key is returned so
        a caller that fails afterwards can remove it."""
        assert parent.result is not None
        text = modal.prompt if modal.prompt and modal.prompt.strip() else parent.prompt
        self.banned.check(text)
        spec = parse_prompt(text).inherit(parent.spec)
        self.check_prompt(spec)
        args = dict(args)
        mask_key = None
        if op is Op.VARY_REGION:
            if not modal.mask:
                raise InvalidRequest(
                    f"Vary (Region) needs a mask: send {modal.mask_field} (white = repaint, black or "
                    "transparent = keep) as a URL, a data URL or base64"
                )
            data = self.fetcher.fetch(modal.mask, what=modal.mask_field)
            image = decode_image(data, what=modal.mask_field, max_pixels=self.limits.max_image_pixels)
            pixels = mask_from_image(image, (parent.result.width, parent.result.height), what=modal.mask_field)
            mask_key = f"{task_id}/mask.png"
            self.images.put(mask_key, encode_png(mask_to_png_pixels(pixels)))
            args["mask"] = mask_key
        else:
            args.update(self._custom_zoom_args(spec, parent))
            spec = replace(spec, zoom=None)
        return _Modal(text, spec, args, mask_key)

    @staticmethod
    def _custom_zoom_args(spec: PromptSpec, parent: Task) -> dict[str, Any]:
        """--zoom (1..2, default 2 as Midjourney's dialog fills in) and, if it changes the shape, --ar."""
        assert parent.result is not None
        zoom = spec.zoom if spec.zoom is not None else 2.0
        aspect = list(spec.aspect) if spec.aspect else None
        if aspect and abs(aspect[0] / aspect[1] - parent.result.width / parent.result.height) < 0.01:
            aspect = None  # the shape it already has
        if zoom == 1 and aspect is None:
            raise InvalidRequest(
                "--zoom 1 with the same aspect ratio leaves nothing to paint; use --zoom above 1 or a new --ar"
            )
        return {"zoom": zoom, "square": False, "aspect": aspect}

    # --- plumbing --------------------------------------------------------------------------------
    def _child(
        self,
        caller: Caller,
        parent: Task,
        plan: Plan,
        *,
        speed: str | None,
        client: ClientData,
        prompt: str | None,
        then_modal: ModalInput | None,
        custom_id: str | None,
    ) -> Task:
        assert parent.result is not None
        self._check_output_size(parent, plan)
        if plan.op is None:  # reroll: the parent's own op again, from the same source, with a new seed
            op, args, index = parent.op, dict(parent.args), parent.source_index
        else:
            op, args, index = plan.op, dict(plan.args), plan.index
            args["source"] = parent.result.images[index - 1 if parent.result.kind == "grid" else 0]
        if custom_id:
            args["custom_id"] = custom_id.strip()
        text, spec = parent.prompt, parent.spec
        if prompt and prompt.strip() and op.makes_grid and not plan.modal:  # Remix
            self.banned.check(prompt)
            text, spec = prompt, parse_prompt(prompt).inherit(parent.spec)
            self.check_prompt(spec)
        client = self._client(client)
        if not plan.modal or then_modal is not None:
            self._check_queue(caller)
        task = self._new_task(
            caller,
            action=plan.action,
            op=op,
            prompt=text,
            spec=spec,
            price_name=plan.price_name,
            speed=Speed(parse_speed(speed)) if speed else parent.speed,
            seed=parent.seed if op is Op.PICK else self._seed(),
            client=client,
            parent=parent,
            source_index=index,
            args=args,
            modal=plan.modal,
        )
        if plan.modal and then_modal is not None:  # both steps at once: straight to the queue
            inputs = self._modal_inputs(task.id, op, args, parent, then_modal)
            task = replace(
                task,
                status=Status.SUBMITTED,
                modal_deadline=None,
                prompt=inputs.prompt,
                spec=inputs.spec,
                args=inputs.args,
            )
            modal_charge = self._quote(caller, "modal", inputs.spec, task.speed)
            self._insert(task, caller, cleanup=True, extra_charges=[modal_charge] if modal_charge else [])
        else:
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
        client: ClientData,
        parent: Task | None = None,
        source_index: int = 1,
        args: dict[str, Any] | None = None,
        modal: bool = False,
        task_id: str | None = None,
    ) -> Task:
        now = self.clock.now_ms()
        return Task(
            id=task_id or self.ids.new(),
            number=self.ids.number(),
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
            client=client,
            modal_deadline=now + self.limits.modal_timeout_ms if modal else None,
        )

    def _insert(
        self, task: Task, caller: Caller, *, cleanup: bool = False, extra_charges: Sequence[Charge] = ()
    ) -> None:
        charge = self._quote(caller, task.price_name, task.spec, task.speed)
        charges = [*([charge] if charge else []), *extra_charges]
        try:
            for _ in range(10):
                try:
                    self.store.insert_task(task, charges)
                    break
                except DuplicateNumber:  # two tasks in one millisecond drew the same three digits
                    task = replace(task, number=self.ids.number())
            else:
                raise Conflict("could not allocate a task number; try again")
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

    def _find(self, ref: str) -> Task | None:
        parsed = parse_task_ref(ref)
        if parsed is None:
            return None
        if parsed.number is not None:
            return self.store.get_task_by_number(parsed.number)
        return self.store.get_task(parsed.id or "")

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
