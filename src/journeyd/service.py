"""TaskService: the use cases every dialect calls. All task rules are applied here.

Two dialects asking for the same thing get the same behaviour because they call the same method:
what may follow what, who may see which task, what it costs, when a modal window closes, which
words are banned, where updates are posted.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from journeyd import metrics
from journeyd.clock import Clock
from journeyd.domain.buttons import ENDPOINT_KINDS, Plan, parse_custom_id, plan_for, plan_named
from journeyd.domain.errors import Conflict, InvalidRequest, NotFound, RateLimited, TooLarge, Unprocessable
from journeyd.domain.idempotency import HEADER as IDEMPOTENCY_HEADER
from journeyd.domain.idempotency import Idempotency
from journeyd.domain.ids import IdGenerator, parse_task_ref, task_id_from_job
from journeyd.domain.keys import ApiKey, Charge
from journeyd.domain.lifecycle import Action, Op, Speed, Status
from journeyd.domain.moderation import BannedWords
from journeyd.domain.pricing import PriceTable
from journeyd.domain.prompt import PromptSpec, parse_prompt, parse_speed, with_overrides
from journeyd.domain.routing import routing_label
from journeyd.domain.task import ClientData, Hook, Task
from journeyd.engines.base import PromptRules
from journeyd.feed import TaskFeed
from journeyd.imaging.budget import PixelBudget
from journeyd.imaging.codec import decode_image, encode_png, image_pixels, to_rgb
from journeyd.imaging.masks import mask_from_image, mask_to_png_pixels
from journeyd.media.storage import ImageStore
from journeyd.roster import Roster
from journeyd.store.base import DuplicateNumber, IdempotencyKeyTaken, QueueFull, Reclaimed, TaskStore, find_task

MODAL_EXPIRED = "the modal window closed before a modal was submitted; the task was cancelled and refunded"
MAX_IMAGE_PROMPTS = 5  # image prompts of one submit; as many --sref and as many --cref images again
BLEND_IMAGES = (2, 5)  # the fewest and most images one blend mixes
# Blend's `dimensions`, as midjourney-proxy names them, and the aspect ratio each stands for
BLEND_DIMENSIONS = {"PORTRAIT": (2, 3), "SQUARE": (1, 1), "LANDSCAPE": (3, 2)}
# A task's input images: the argument that lists their keys -> (key prefix, the prompt flag they came in)
INPUTS = {
    "image_prompts": ("input", None),
    "images": ("input", None),  # a blend's or a describe's
    "style_refs": ("input-sref", "--sref"),
    "character_refs": ("input-cref", "--cref"),
}
MAX_SHORTEN_CHARS = 2000  # a prompt to shorten: each phrase costs the engine a text-encoder pass
IMAGE_PROMPT_SIDE = 2048  # image prompts steer a picture drawn at ~1 MP: more pixels would only cost memory
MAX_LISTED_TASKS = 1000  # tasks one list request may name
HOOK_FIELDS = {"mj": "notifyHook", "mymidjourney": "webhookOverride"}
NO_CLIENT_DATA = ClientData()


class Fetcher(Protocol):
    def fetch(self, source: str, *, what: str = ...) -> bytes: ...

    def check_url(self, url: str, *, what: str) -> None: ...


class Dispatcher(Protocol):
    """Delivers bells: "a task you may be able to run is queued". The task row is the truth; a bell
    carries no more than which model's workers to wake (and how urgently), so a lost or repeated bell
    changes nothing but when a task starts."""

    def wake(self, task_id: str, model: str, speed: Speed = Speed.RELAX) -> None:
        """Ring for `task_id`, whose routing label (`domain.routing.routing_label`) is `model`. Returns at
        once and never raises: a bell that cannot be delivered is logged and left to the sweep."""
        ...


@dataclass(frozen=True)
class Caller:
    """Who is asking (an API key, or the local operator on loopback when no key exists), and the
    Idempotency-Key of the submit they are making, if they sent one."""

    key: ApiKey | None = None
    idempotency: Idempotency | None = None

    @property
    def owner(self) -> str | None:
        return self.key.id if self.key else None


@dataclass(frozen=True)
class Limits:
    modal_timeout_ms: int = 1_800_000
    max_queued_per_key: int = 50
    max_image_pixels: int = 40_000_000  # one image a client sends
    max_request_pixels: int = 64_000_000  # all the images of one request together
    max_output_pixels: int = 16_777_216
    max_attempts: int = 3
    handover_ms: int = 30_000  # a queued task nobody took this long after its hand-over is handed over again


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


class _AcceptEverything:
    """The rules of a service built with none: every prompt and action is taken."""

    name = "any"

    def check(self, prompt: PromptSpec) -> None:
        pass

    def check_blend(self, prompt: PromptSpec) -> None:
        pass

    def check_describe(self) -> None:
        pass

    def check_shorten(self, prompt: PromptSpec) -> None:
        pass


ACCEPT_EVERYTHING: PromptRules = _AcceptEverything()


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
        rules: PromptRules | None = None,
        rng: random.Random | None = None,
        roster: Roster | None = None,
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
        self.rules: PromptRules = rules or ACCEPT_EVERYTHING  # the engine refuses, at submit, what it cannot do
        self.roster = roster  # a fleet's: which models its workers serve (None: embedded, any worker takes any)
        self._rng = rng or random.Random()
        self._decoding = PixelBudget(self.limits.max_image_pixels)  # full-size pixels decoded at once

    # --- reading ---------------------------------------------------------------------------------
    def get(self, caller: Caller, ref: str) -> Task:
        """A task the caller owns, named in any of its forms; anything else is a 404."""
        task = self._find(ref)
        if task is None or task.owner != caller.owner:
            raise NotFound(f"task {ref} not found")
        return task

    def get_many(self, caller: Caller, refs: Sequence[str]) -> list[Task]:
        """The caller's tasks among `refs`, in that order; unknown and foreign ones are left out. One
        store round trip for them all, however many there are (up to MAX_LISTED_TASKS)."""
        if len(refs) > MAX_LISTED_TASKS:
            raise InvalidRequest(f"{len(refs)} ids in one request; at most {MAX_LISTED_TASKS}: split the list")
        parsed = [parse_task_ref(ref) if isinstance(ref, str) else None for ref in refs]
        found = self.store.get_tasks(
            ids=[p.id for p in parsed if p and p.id], numbers=[p.number for p in parsed if p and p.number is not None]
        )
        by_id = {task.id: task for task in found}
        by_number = {task.number: task for task in found}
        tasks = [by_id.get(p.id or "") if p.number is None else by_number.get(p.number) for p in parsed if p]
        return [task for task in tasks if task is not None and task.owner == caller.owner]

    def parent(self, task: Task) -> Task | None:
        """The task whose button made `task` (visible to whoever can see `task`)."""
        return self.store.get_task(task.parent_id) if task.parent_id else None

    def recent(self, caller: Caller, limit: int = 100, *, before: str | None = None) -> list[Task]:
        """The caller's newest tasks first; with `before` (a task of theirs, in any of its forms), the
        ones submitted before it: the next page of a history whose last task was `before`."""
        if before is None:
            return self.store.list_tasks(caller.owner, limit=limit)
        task = self._find(before)
        if task is None or task.owner != caller.owner:
            raise InvalidRequest(f"before={before[:40]}: no task of yours has this id; send the id of one you listed")
        return self.store.list_tasks(caller.owner, limit=limit, before=task.id)

    def feed(self, caller: Caller, since: int | None = None) -> TaskFeed:
        """The changes of the caller's tasks after the cursor `since`, or from now on."""
        return TaskFeed(self.store, caller.owner, since=since, now=self.clock.now_ms())

    def queue(self, caller: Caller) -> list[Task]:
        """The caller's tasks waiting or running, in the order they run."""
        return self.store.list_tasks(caller.owner, statuses=(Status.IN_PROGRESS, Status.SUBMITTED), limit=1000)

    def tasks_ahead(self, task: Task) -> int:
        return self.store.queue_position(task.id) if task.status is Status.SUBMITTED else 0

    def resolve_custom_id(self, custom_id: str) -> str:
        """The task id a customId belongs to (its job UUID), for requests that send only a customId."""
        cid = parse_custom_id(custom_id)
        if not cid.job:
            raise InvalidRequest(
                f"custom_id {custom_id!r} names no task (Midjourney's describe and shorten buttons do not); "
                "send the task id with it"
            )
        task_id = task_id_from_job(cid.job)
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
        replayed = self._replay(caller)
        if replayed is not None:
            return replayed
        spec = with_overrides(parse_prompt(prompt), **(overrides or {}))
        if not spec.text and not spec.image_urls and not image_urls:
            raise InvalidRequest("prompt is empty: describe the image to imagine")
        self.banned.check(prompt)
        self.rules.check(spec)
        client = self._client(client)
        self._check_queue(caller)
        task_id = self.ids.new()
        keys = self._store_images(
            task_id,
            {
                "image_prompts": [*spec.image_urls, *image_urls],
                "style_refs": list(spec.style_refs),
                "character_refs": list(spec.character_refs),
            },
        )
        task = self._new_task(
            caller,
            task_id=task_id,
            args=keys,
            action=Action.IMAGINE,
            op=Op.GENERATE,
            prompt=prompt,
            spec=spec,
            price_name="imagine",
            speed=Speed(spec.speed or Speed.RELAX),
            seed=spec.seed if spec.seed is not None else self._seed(),
            client=client,
        )
        return self._insert(task, caller, cleanup=bool(keys))

    def describe(
        self,
        caller: Caller,
        image: str,
        *,
        field: str = "image",
        speed: str | None = None,
        client: ClientData = NO_CLIENT_DATA,
    ) -> Task:
        """/describe: four prompts for an image (a URL, a data URL or base64), sent in request field `field`."""
        replayed = self._replay(caller)
        if replayed is not None:
            return replayed
        if not isinstance(image, str) or not image.strip():
            raise InvalidRequest("send the image to describe: base64 (or a data URL), or link (an http(s) URL)")
        self.rules.check_describe()
        return self._analyse(
            caller, Action.DESCRIBE, Op.DESCRIBE, "", PromptSpec(), speed, client, images=[image], field=field
        )

    def blend(
        self,
        caller: Caller,
        images: Sequence[str],
        *,
        dimensions: str | None = None,
        prompt: str = "",
        speed: str | None = None,
        client: ClientData = NO_CLIENT_DATA,
    ) -> Task:
        """/blend: a grid of 4 mixing 2..5 images, in the shape `dimensions` names (PORTRAIT 2:3, SQUARE,
        LANDSCAPE 3:2; square when not given), with an optional prompt."""
        replayed = self._replay(caller)
        if replayed is not None:
            return replayed
        fewest, most = BLEND_IMAGES
        if not fewest <= len(images) <= most:
            raise InvalidRequest(f"blend mixes {fewest} to {most} images; got {len(images)}")
        shape = (dimensions or "SQUARE").strip().upper()
        if shape not in BLEND_DIMENSIONS:
            raise InvalidRequest(f"dimensions must be one of {', '.join(BLEND_DIMENSIONS)}; got {dimensions!r}")
        self.banned.check(prompt)
        spec = replace(parse_prompt(prompt), aspect=BLEND_DIMENSIONS[shape])
        if spec.image_urls:
            raise InvalidRequest("a blend's images go in their own field, not at the start of its prompt")
        self.rules.check_blend(spec)
        return self._analyse(caller, Action.BLEND, Op.BLEND, prompt, spec, speed, client, images=list(images))

    def shorten(
        self, caller: Caller, prompt: str, *, speed: str | None = None, client: ClientData = NO_CLIENT_DATA
    ) -> Task:
        """/shorten: which phrases of a prompt matter to the engine, and five shorter prompts."""
        replayed = self._replay(caller)
        if replayed is not None:
            return replayed
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidRequest("prompt is empty: send the prompt to shorten")
        if len(prompt) > MAX_SHORTEN_CHARS:
            raise InvalidRequest(f"the prompt to shorten is {len(prompt)} characters; the limit is {MAX_SHORTEN_CHARS}")
        self.banned.check(prompt)
        spec = parse_prompt(prompt)
        if not spec.text:
            raise InvalidRequest("the prompt has no words to shorten, only images or --flags")
        # Its words are weighed, not drawn: references it names are not fetched, so need no adapter.
        unreferenced = replace(spec, style_refs=(), style_weight=None, character_refs=(), character_weight=None)
        self.rules.check_shorten(unreferenced)
        return self._analyse(caller, Action.SHORTEN, Op.SHORTEN, prompt, spec, speed, client)

    def _analyse(
        self,
        caller: Caller,
        action: Action,
        op: Op,
        prompt: str,
        spec: PromptSpec,
        speed: str | None,
        client: ClientData,
        *,
        images: Sequence[str] = (),
        field: str = "base64Array",
    ) -> Task:
        """Queue a Describe, Blend or Shorten, with the images it works on (fetched now, so a bad one is a
        4xx). Like every task it runs on a worker: the engine, and its models, are there."""
        client = self._client(client)
        self._check_queue(caller)
        task_id = self.ids.new()
        keys = self._store_images(task_id, {"images": list(images)}, field=field)
        task = self._new_task(
            caller,
            task_id=task_id,
            args=keys,
            action=action,
            op=op,
            prompt=prompt,
            spec=spec,
            price_name=action.value.lower(),
            speed=Speed(parse_speed(speed)) if speed else Speed(spec.speed or Speed.RELAX),
            seed=spec.seed if spec.seed is not None else self._seed(),
            client=client,
        )
        return self._insert(task, caller, cleanup=bool(keys))

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
        replayed = self._replay(caller)
        if replayed is not None:
            return replayed
        parent = self.get(caller, ref)
        self._check_ready(parent)
        assert parent.result is not None
        if custom_id:
            cid = parse_custom_id(custom_id)
            if cid.job and cid.job != parent.job:  # Midjourney's describe/shorten buttons name none
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
        if plan.every_prompt:
            raise InvalidRequest("🎉Imagine all makes four tasks: press it with imagine_all")
        return self._child(
            caller, parent, plan, speed=speed, client=client, prompt=prompt, then_modal=then_modal, custom_id=custom_id
        )

    def imagine_all(
        self,
        caller: Caller,
        ref: str,
        *,
        custom_id: str,
        speed: str | None = None,
        client: ClientData = NO_CLIENT_DATA,
    ) -> list[Task]:
        """🎉Imagine all, after a describe: one Imagine per prompt, queued at once (no modal), each priced as
        an Imagine. With an Idempotency-Key, a retry gets the same four tasks."""
        replayed = self._replay(caller)
        if replayed is not None:
            siblings = {task.id: task for task in self.store.get_tasks(ids=replayed.args.get("siblings", []))}
            return [replayed, *(siblings[task_id] for task_id in replayed.args.get("siblings", []))]
        parent = self.get(caller, ref)
        self._check_ready(parent)
        assert parent.result is not None
        cid = parse_custom_id(custom_id)
        plan = plan_for(cid)
        if not plan.every_prompt or (cid.job and cid.job != parent.job):
            raise InvalidRequest(f"custom_id {custom_id!r} is not this task's 🎉Imagine all button")
        self._check_parent_kind(parent, plan)
        count = len(parent.result.prompts)
        limit = self.limits.max_queued_per_key
        if limit and self.store.queued_count(caller.owner) + count > limit:
            raise self._queue_full(limit)
        client = self._client(client)
        ids = [self.ids.new() for _ in range(count)]
        tasks = []
        for index, task_id in enumerate(ids, start=1):
            task = self._picked(caller, parent, plan, index, speed=speed, client=client, custom_id=custom_id)
            args = {**task.args, "siblings": ids[1:]} if index == 1 else task.args
            # the first carries the Idempotency-Key (a retry finds the rest through it); the others none
            who = caller if index == 1 else replace(caller, idempotency=None)
            tasks.append(self._insert(replace(task, id=task_id, args=args), who))
            if index == 1 and tasks[0].id != task_id:  # a concurrent twin with the same key won
                return self.imagine_all(caller, ref, custom_id=custom_id, speed=speed, client=client)
        return tasks

    def modal(self, caller: Caller, ref: str, modal: ModalInput) -> Task:
        """Finish a MODAL task (Vary (Region) or Custom Zoom) with a prompt and, for Region, a mask."""
        replayed = self._replay(caller)
        if replayed is not None:
            return replayed
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
        inputs = self._modal_inputs(task.id, task.op, task.args, parent, modal, default_prompt=task.prompt)
        # a prompt picked after describe/shorten was priced as an Imagine when it was pressed
        charge = None if task.op is Op.GENERATE else self._quote(caller, "modal", inputs.spec, task.speed)
        try:
            self._check_served(inputs.spec)
            submitted = self.store.submit_modal(
                task.id,
                self.clock.now_ms(),
                prompt=inputs.prompt,
                spec=inputs.spec,
                args=inputs.args,
                charge=charge,
                max_queued=self.limits.max_queued_per_key,
                idempotency=caller.idempotency,
            )
        except QueueFull as full:
            self._forget(inputs.mask_key)
            raise self._queue_full(full.limit) from None
        except IdempotencyKeyTaken:
            self._forget(inputs.mask_key)
            return self._replayed_twin(caller)
        except BaseException:
            self._forget(inputs.mask_key)
            raise
        if submitted is None:
            self._forget(inputs.mask_key)
            raise Conflict(f"task {task.id}: {MODAL_EXPIRED}")
        self._ring(submitted)
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

    def forget_idempotency_keys(self) -> int:
        return self.store.forget_idempotency_keys(self.clock.now_ms())

    def reclaim(self, *, every_lease: bool = False) -> Reclaimed:
        reclaimed = self.store.reclaim(self.clock.now_ms(), self.limits.max_attempts, every_lease=every_lease)
        metrics.leases_reclaimed(len(reclaimed.requeued), len(reclaimed.failed))
        if reclaimed.requeued:
            for task in self.store.get_tasks(ids=reclaimed.requeued):
                self._ring(task)
        return reclaimed

    def hand_over_stale(self) -> list[str]:
        """Ring again for the tasks queued longer than `handover_ms` since their last hand-over: the
        bell was lost (the broker was down, the process died between the commit and the publish) or
        every worker is busy. The row is the truth, so a bell too many claims nothing."""
        stale = self.store.stale_queued(self.clock.now_ms(), self.limits.handover_ms)
        if stale:
            for task in self.store.get_tasks(ids=stale):
                self._ring(task)
        return stale

    def fail_unserved(self) -> list[str]:
        """Fail, refunded, the queued tasks no worker has served the model of for too long (a fleet's)."""
        return self.roster.fail_unserved() if self.roster is not None else []

    def forget_silent_workers(self) -> int:
        return self.roster.forget_silent() if self.roster is not None else 0

    def _ring(self, task: Task) -> None:
        """Tell the workers that can draw `task` that it is queued."""
        self.dispatcher.wake(task.id, routing_label(task.spec), task.speed)

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
        if plan.needs in ("describe", "shorten") or parent.result.kind in ("describe", "shorten"):
            if parent.result.kind != plan.needs:
                made_by = {"describe": "a describe", "shorten": "a shorten"}
                raise InvalidRequest(
                    f"this button acts on {made_by.get(plan.needs, 'an image')}; task {parent.id} is "
                    f"{made_by.get(parent.result.kind, 'an image')}"
                )
            if plan.op is not None and not plan.every_prompt and not 1 <= plan.index <= len(parent.result.prompts):
                raise InvalidRequest(f"index must be from 1 to {len(parent.result.prompts)}, got {plan.index}")
            return
        if plan.needs == "single" and parent.result.kind != "single":
            raise InvalidRequest("This action requires an upscaled task.")
        if plan.needs == "grid" and parent.result.kind != "grid":
            raise InvalidRequest("This action requires a four-image grid task (U1-U4, V1-V4 and 🔄 act on grids).")
        if plan.needs == "grid" and plan.op is not None and not 1 <= plan.index <= len(parent.result.images):
            raise InvalidRequest(f"index must be from 1 to 4, got {plan.index}")

    def _check_served(self, spec: PromptSpec) -> None:
        """In a fleet, refuse a task for a model none of the live workers serves (see roster.py)."""
        if self.roster is not None:
            self.roster.check(spec)

    def _check_queue(self, caller: Caller) -> None:
        """Refuse early, before fetching images for a submit that cannot be queued. (The cap itself is
        kept by the store, in the transaction that queues the task.)"""
        limit = self.limits.max_queued_per_key
        if limit and self.store.queued_count(caller.owner) >= limit:
            raise self._queue_full(limit)

    @staticmethod
    def _queue_full(limit: int) -> RateLimited:
        return RateLimited(f"you already have {limit} tasks queued or running; wait for some to finish")

    def _replay(self, caller: Caller) -> Task | None:
        """The task a retried submit already made: same Idempotency-Key, same request."""
        if caller.idempotency is None:
            return None
        first = self.store.idempotent_submit(caller.owner, caller.idempotency.key, self.clock.now_ms())
        if first is None:
            return None
        if first.fingerprint != caller.idempotency.fingerprint:
            raise Unprocessable(
                f"this {IDEMPOTENCY_HEADER} was already used for a different request (another endpoint or body) "
                "in the last 24 hours; use a new key for a new request"
            )
        task = self.store.get_task(first.task_id)
        assert task is not None, first  # tasks are never deleted
        return task

    def _replayed_twin(self, caller: Caller) -> Task:
        """A concurrent request with the same key won the race: answer with its task."""
        task = self._replay(caller)
        assert task is not None
        return task

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

    def _modal_inputs(
        self, task_id: str, op: Op, args: dict[str, Any], parent: Task, modal: ModalInput, *, default_prompt: str
    ) -> _Modal:
        """Prompt, spec and arguments a modal gives a task (an empty prompt keeps `default_prompt`: the
        parent's, or the one picked after a describe); stores the mask, whose key is returned so a caller
        that fails afterwards can remove it."""
        assert parent.result is not None
        text = modal.prompt if modal.prompt and modal.prompt.strip() else default_prompt
        self.banned.check(text)
        spec = parse_prompt(text).inherit(parent.spec)
        self.rules.check(spec)
        args = dict(args)
        mask_key = None
        if op is Op.VARY_REGION:
            if not modal.mask:
                raise InvalidRequest(
                    f"Vary (Region) needs a mask: send {modal.mask_field} (white = repaint, black or "
                    "transparent = keep) as a URL, a data URL or base64"
                )
            data = self.fetcher.fetch(modal.mask, what=modal.mask_field)
            with self._decoding.hold(image_pixels(data)):
                image = decode_image(data, what=modal.mask_field, max_pixels=self.limits.max_image_pixels)
                pixels = mask_from_image(image, (parent.result.width, parent.result.height), what=modal.mask_field)
                del image  # its full-size pixels go before the budget is given back
            # a key of its own: a concurrent modal that loses the race deletes only its own mask
            mask_key = f"{task_id}/mask-{secrets.token_hex(6)}.png"
            self.images.put(mask_key, encode_png(mask_to_png_pixels(pixels)))
            args["mask"] = mask_key
        elif op is Op.ZOOM_OUT:
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
        if plan.needs in ("describe", "shorten") and plan.op is not None:
            return self._insert(
                self._picked(
                    caller, parent, plan, plan.index, speed=speed, client=self._client(client), custom_id=custom_id
                ),
                caller,
            )
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
            self.rules.check(spec)
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
            inputs = self._modal_inputs(task.id, op, args, parent, then_modal, default_prompt=text)
            task = replace(
                task,
                status=Status.SUBMITTED,
                modal_deadline=None,
                prompt=inputs.prompt,
                spec=inputs.spec,
                args=inputs.args,
            )
            modal_charge = self._quote(caller, "modal", inputs.spec, task.speed)
            return self._insert(task, caller, cleanup=True, extra_charges=[modal_charge] if modal_charge else [])
        return self._insert(task, caller)

    def _picked(
        self,
        caller: Caller,
        parent: Task,
        plan: Plan,
        index: int,
        *,
        speed: str | None,
        client: ClientData,
        custom_id: str | None,
    ) -> Task:
        """An Imagine of prompt `index` of a describe or shorten, with the parent's flags (its --ar, say)."""
        assert parent.result is not None
        text = parent.result.prompts[index - 1]
        self.banned.check(text)
        spec = parse_prompt(text).inherit(parent.spec)
        self.rules.check(spec)
        if not plan.modal:
            self._check_queue(caller)
        return self._new_task(
            caller,
            action=plan.action,
            op=Op.GENERATE,
            prompt=text,
            spec=spec,
            price_name=plan.price_name,
            speed=Speed(parse_speed(speed)) if speed else parent.speed,
            seed=self._seed(),
            client=client,
            parent=parent,
            source_index=index,
            args={"custom_id": custom_id.strip()} if custom_id else {},
            modal=plan.modal,
        )

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
    ) -> Task:
        """Write the new task and its charges; the task the caller gets (a twin's, when a concurrent
        request with the same Idempotency-Key won)."""
        charge = self._quote(caller, task.price_name, task.spec, task.speed)
        charges = [*([charge] if charge else []), *extra_charges]
        try:
            if task.status is Status.SUBMITTED:
                self._check_served(task.spec)
            for _ in range(10):
                try:
                    self.store.insert_task(
                        task, charges, max_queued=self.limits.max_queued_per_key, idempotency=caller.idempotency
                    )
                    break
                except DuplicateNumber:  # two tasks in one millisecond drew the same three digits
                    task = replace(task, number=self.ids.number())
            else:
                raise Conflict("could not allocate a task number; try again")
        except QueueFull as full:
            self._discard(task, cleanup)
            raise self._queue_full(full.limit) from None
        except IdempotencyKeyTaken:
            self._discard(task, cleanup)
            return self._replayed_twin(caller)
        except BaseException:
            self._discard(task, cleanup)
            raise
        if task.status is Status.SUBMITTED:
            self._ring(task)
        return task

    def _discard(self, task: Task, cleanup: bool) -> None:
        """Remove what a submit stored before its task was refused (image prompts, a mask)."""
        if cleanup:
            self.images.delete_task(task.id)

    def _quote(self, caller: Caller, action: str, spec: PromptSpec, speed: Speed) -> Charge | None:
        if caller.key is None:
            return None  # the local operator on loopback is not metered
        quote = self.prices.quote(action, spec.model_version, speed.value)
        if quote is None:
            return None
        step = "modal" if action == "modal" else "submit"
        return Charge(caller.key.id, step, quote.key, quote.amount)

    def _find(self, ref: str) -> Task | None:
        return find_task(self.store, ref)

    def _store_images(
        self, task_id: str, groups: dict[str, list[str]], *, field: str = "image_urls"
    ) -> dict[str, list[str]]:
        """Fetch, decode (one full-size image at a time, process-wide) and store a task's input images, by
        the argument they go to (`INPUTS`): their keys, for the groups that have any. `field` names the
        request field of the image prompts or blend images in errors. Each image is shrunk to what an
        engine can use; on any failure none of them is left behind."""
        for name, sources in groups.items():
            most = BLEND_IMAGES[1] if name == "images" else MAX_IMAGE_PROMPTS
            if len(sources) > most:
                raise InvalidRequest(f"{len(sources)} {INPUTS[name][1] or field} images; the limit is {most}")
        keys: dict[str, list[str]] = {}
        total = 0
        try:
            for name, sources in groups.items():
                prefix, flag = INPUTS[name]
                for index, source in enumerate(sources):
                    what = f"{flag or field}[{index}]"
                    if name == "images" and len(sources) == 1:
                        what = field  # describe's one image: `base64` or `link`, not a list
                    data = self.fetcher.fetch(source, what=what)
                    pixels = image_pixels(data)
                    total += pixels
                    if total > self.limits.max_request_pixels:
                        raise TooLarge(
                            f"the images add up to over {self.limits.max_request_pixels / 1e6:.0f} megapixels, "
                            "the limit for one request; send smaller images"
                        )
                    with self._decoding.hold(pixels):
                        image = decode_image(
                            data, what=what, max_pixels=self.limits.max_image_pixels, max_side=IMAGE_PROMPT_SIDE
                        )
                    key = f"{task_id}/{prefix}-{index}.png"
                    self.images.put(key, encode_png(to_rgb(image)))
                    keys.setdefault(name, []).append(key)
        except BaseException:
            self.images.delete_task(task_id)
            raise
        return keys

    def _forget(self, key: str | None) -> None:
        if key:
            self.images.delete(key)

    def _seed(self) -> int:
        return self._rng.randrange(0, 2**32)
