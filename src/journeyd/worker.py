"""run_task: claim a row, lease it, call the engine, save images, finish the row.

The same worker body runs in every dispatch mode. Claiming is a conditional update, so a task
delivered twice runs once; outputs go to deterministic keys, so a task re-run after a crash
overwrites its own files instead of leaving strays.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import cast

import numpy as np

from journeyd import metrics
from journeyd.clock import Clock
from journeyd.domain.errors import JourneydError, StorageUnavailable, TaskCancelled
from journeyd.domain.lifecycle import Status
from journeyd.domain.task import Result, Task
from journeyd.engines.base import BatchEngine, Engine, EngineOutOfMemory, Progress
from journeyd.imaging.codec import decode_png, encode_jpeg, encode_png
from journeyd.imaging.grid import make_grid
from journeyd.media.storage import ImageStore
from journeyd.render import CANDIDATES, Inputs, Rendered, batch_key, render, render_batch
from journeyd.store.base import TaskStore

log = logging.getLogger("journeyd.worker")
PREVIEW = "preview.jpg"


def output_key(task: Task, name: str) -> str:
    """Where this run of the task saves an output. Each run has its own names (the first keeps the
    plain ones), so a worker that lost its lease and carries on can never overwrite the images of
    the run that finished the task: its finish is refused, and its files are its own to delete."""
    return f"{task.id}/{name}" if task.attempts <= 1 else f"{task.id}/run{task.attempts}-{name}"


class LeaseLost(Exception):
    """Another worker took the task over (our lease ran out); stop without writing anything."""


class _Heartbeat:
    """The engine's progress callback: records progress, renews the lease, raises TaskCancelled as
    soon as a cancel was requested and LeaseLost once the task is another's.

    Each write is a database commit, and each preview an image upload: a fleet pays for every one.
    So the first step that moves progress writes at once (the client sees the task move), then a
    write comes every `heartbeat_ms` (the lease's renewal), or sooner, after a quarter of that, when
    progress rose 10 points; a step preview rides along at most every `heartbeat_ms`. A 50-step
    engine does not write 50 rows, and a task done in a fraction of a second writes once."""

    def __init__(self, worker: Worker, task: Task) -> None:
        self.worker, self.task = worker, task
        self.last_write = worker.clock.now_ms()  # the claim wrote progress 0 and the lease
        self.last_preview = -(10**18)
        self.last_percent = 0
        self.moved = False  # no progress written yet
        self.last_done = 0
        self.last_step = self.last_write  # when the engine last reported a step (the claim counts as one)
        self.saved_preview = task.preview is not None  # an earlier run's, perhaps: deleted at the end too
        self.lock = threading.Lock()  # the engine's thread and the lease keeper's both write

    def __call__(self, done: int, total: int, preview: np.ndarray | None = None) -> None:
        with self.lock:
            self._step(done, total, preview)

    def renew(self, now: int) -> None:
        """The lease keeper's write: the lease, and the progress already shown. What it finds (a cancel,
        a lost lease) the engine's next step finds too, and acts on."""
        with self.lock:
            self.last_write = now
            try:
                self.worker.store.heartbeat(self.task.id, self.worker.id, now, self.worker.lease_ms, self.last_percent)
            except StorageUnavailable as error:
                log.warning("task %s: lease renewal missed: %s", self.task.id, error)

    def _step(self, done: int, total: int, preview: np.ndarray | None) -> None:
        now, every = self.worker.clock.now_ms(), self.worker.heartbeat_ms
        self.last_step = now
        if done > self.last_done:
            metrics.engine_steps(self.worker.engine.name, done - self.last_done)
            self.last_done = done
        percent = max(0, min(99, done * 100 // max(total, 1)))
        since, rose = now - self.last_write, percent - self.last_percent
        if not ((rose > 0 and not self.moved) or since >= every or (rose >= 10 and since >= every // 4)):
            return
        self.last_write, self.last_percent = now, percent
        self.moved = self.moved or rose > 0
        saved = False
        if preview is not None and now - self.last_preview >= every:
            saved = self.worker.try_images(self.worker.images.put, f"{self.task.id}/{PREVIEW}", encode_jpeg(preview))
            if saved:
                self.last_preview, self.saved_preview = now, True
        try:
            cancel = self.worker.store.heartbeat(
                self.task.id, self.worker.id, now, self.worker.lease_ms, percent, preview=saved
            )
        except StorageUnavailable as error:
            # A blip (a cut connection, a failover, a partition) costs a heartbeat, not the task: render on.
            # The store judges the lease when it is back, at the next heartbeat or at the finish; if the lease
            # ran out meanwhile and another worker took the task, both are refused then.
            log.warning("task %s: heartbeat missed, rendering on: %s", self.task.id, error)
            return
        if cancel is None:
            raise LeaseLost(self.task.id)
        if cancel:
            raise TaskCancelled(self.task.id)


class _LeaseKeeper:
    """Renews the leases of an engine call's tasks from a thread of its own, so that one long step (a
    recompile for a new size, a first adapter load, a big VAE decode) does not lose a task that is
    alive; a step's own writes keep renewing them as before. An engine silent for `stall_ms` is taken
    to be hung: its tasks' leases are left to run out, and the lease reclaim requeues them."""

    def __init__(self, worker: Worker, beats: dict[str, _Heartbeat], left: dict[str, Task]) -> None:
        self.worker, self.beats, self.left = worker, beats, left
        self._stop = threading.Event()
        self._given_up: set[str] = set()
        self._thread = threading.Thread(target=self._run, name=f"lease-{worker.id}", daemon=True)

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        every_ms = self.worker.lease_ms // 4  # three renewals may go missing before the lease runs out
        while not self._stop.wait(every_ms / 1000):
            now = self.worker.clock.now_ms()
            for task_id, beat in list(self.beats.items()):
                if task_id not in self.left or task_id in self._given_up or now - beat.last_write < every_ms:
                    continue
                if now - beat.last_step >= self.worker.stall_ms:
                    self._given_up.add(task_id)
                    log.error(
                        "task %s: the %s engine reported no step for %d s; leaving the task to the lease reclaim",
                        task_id, self.worker.engine.name, (now - beat.last_step) // 1000,
                    )  # fmt: skip
                    continue
                beat.renew(now)


class _Saves:
    """One save in flight at a time, on a thread of its own: handing off the next waits for the last,
    so a slow image store slows the engine down instead of piling up images in memory. A thread per
    save, not a pool: nothing is left idling once a worker stops, and the interpreter's exit waits for it."""

    def __init__(self, worker_id: str) -> None:
        self._name = f"save-{worker_id}"
        self._last: threading.Thread | None = None

    def hand_off(self, save: Callable[[], object]) -> None:
        self.wait()
        self._last = threading.Thread(target=save, name=self._name)
        self._last.start()

    def wait(self) -> None:
        if self._last is not None:
            self._last.join()


class Worker:
    def __init__(
        self,
        store: TaskStore,
        images: ImageStore,
        engine: Engine,
        clock: Clock,
        *,
        worker_id: str,
        lease_ms: int = 60_000,
        heartbeat_ms: int = 1_000,
        max_output_pixels: int = 16_777_216,
        batch_tasks: int = 1,
        models: Sequence[str] | None = None,
        overlap_saves: bool = False,
        keep_leases: bool = False,
        stall_ms: int = 600_000,
    ) -> None:
        self.store, self.images, self.engine, self.clock = store, images, engine, clock
        self.id = worker_id
        self.lease_ms, self.heartbeat_ms = lease_ms, heartbeat_ms
        self.max_output_pixels = max_output_pixels
        self.batch_tasks = batch_tasks  # Imagine tasks one engine call may draw together
        # The routing labels this worker claims (None: any). A fleet worker claims what its engine
        # serves (`served_models`), so it never takes a task another box is for, whatever bell woke
        # it; the embedded workers claim any, so a task for a version no longer configured fails
        # with a reason instead of waiting forever.
        self.models: Sequence[str] | None = models
        # overlap_saves: a task's images are encoded and uploaded, and its end recorded, on a thread of
        # their own while the engine draws the next task (a GPU does not wait for S3). `run` returns
        # before its tasks have ended then; one save is in flight at most, and `drain` waits for it.
        self._saves = _Saves(worker_id) if overlap_saves else None
        # keep_leases: a thread renews the leases while the engine draws, until it is silent `stall_ms`
        # (see `_LeaseKeeper`); without it, only the engine's steps renew them.
        self.keep_leases, self.stall_ms = keep_leases, stall_ms

    def run_next(self) -> Task | None:
        """Claim and run the next queued task, with the tasks queued right behind it that can share
        its engine call (up to `batch_tasks`); None when the queue is empty."""
        tasks = self.store.claim_batch(
            self.id, self.clock.now_ms(), self.lease_ms, limit=self.batch_tasks, key=self._batch_key, models=self.models
        )
        return self.run(tasks)[0] if tasks else None

    def _batch_key(self, task: Task) -> object | None:
        return batch_key(task, self.engine)

    def run(self, tasks: Sequence[Task]) -> list[Task]:
        """Run claimed tasks (several only if they share a batch key) in one engine call. A task
        cancelled, or taken over by another worker, meanwhile leaves at once (a cancel is final
        then and there); the call itself stops when no task is left in it."""
        left = {task.id: task for task in tasks}
        ended: dict[str, Task] = {}
        beats = {task.id: _Heartbeat(self, task) for task in tasks}

        def finish(task: Task, status: Status, **fields: object) -> Task:
            return self._finish(task, status, previewed=beats[task.id].saved_preview, **fields)

        def progress_of(task: Task) -> Progress:
            heartbeat = beats[task.id]

            def report(done: int, total: int, preview: np.ndarray | None = None) -> None:
                if task.id in left:
                    try:
                        heartbeat(done, total, preview)
                    except TaskCancelled:
                        del left[task.id]
                        ended[task.id] = finish(task, Status.CANCELLED, fail_reason="cancelled by request")
                    except LeaseLost:
                        del left[task.id]
                        log.warning("task %s: lease lost, leaving it to its new worker", task.id)
                        ended[task.id] = self.store.get_task(task.id) or task
                if not left:
                    raise TaskCancelled("no task is left in this call")

            return report

        try:
            progress = [progress_of(task) for task in tasks]
            with _LeaseKeeper(self, beats, left) if self.keep_leases else nullcontext():
                if len(tasks) == 1:
                    task = tasks[0]
                    inputs = self._inputs(task)
                    limit = self.max_output_pixels
                    rendered = [render(task, inputs, self.engine, progress[0], max_output_pixels=limit)]
                else:
                    rendered = render_batch(tasks, cast(BatchEngine, self.engine), progress)
        except TaskCancelled:  # raised above once no task is left; from an engine itself, for all that are
            for task in left.values():
                ended[task.id] = finish(task, Status.CANCELLED, fail_reason="cancelled by request")
        except EngineOutOfMemory as error:
            if len(left) > 1:  # a batch that does not fit: each task may fit alone
                log.warning("%s for a batch of %d tasks; running them one at a time", error, len(left))
                for task in list(left.values()):
                    ended[task.id] = self.run([task])[0]
            else:
                for task in left.values():
                    ended[task.id] = finish(
                        task, Status.FAILURE, fail_reason=f"{error}; a smaller size or model may fit"
                    )
        except JourneydError as error:  # StorageUnavailable included: an input image could not be loaded
            if isinstance(error, StorageUnavailable):
                log.error("tasks %s stopped: %s", ", ".join(left), error)
            for task in left.values():
                ended[task.id] = finish(task, Status.FAILURE, fail_reason=error.message)
        except Exception as error:
            log.error("tasks %s failed:\n%s", ", ".join(left), traceback.format_exc())
            reason = f"{self.engine.name} engine error: {type(error).__name__}: {error}"
            for task in left.values():
                ended[task.id] = finish(task, Status.FAILURE, fail_reason=reason)
        else:
            drawn = [(task, output) for task, output in zip(tasks, rendered, strict=True) if task.id in left]
            if self._saves is None:
                ended.update(self._settle(drawn, finish))
            else:  # the engine is free: it draws the next task while these images go out
                self._saves.hand_off(lambda: self._settle(drawn, finish))
                return [ended.get(task.id) or task for task in tasks]
        return [ended.get(task.id) or self.store.get_task(task.id) or task for task in tasks]

    def drain(self) -> None:
        """Wait until the images of the last task drawn are saved and its end recorded (see `overlap_saves`)."""
        if self._saves is not None:
            self._saves.wait()

    def _settle(self, drawn: Sequence[tuple[Task, Rendered]], finish: Callable[..., Task]) -> dict[str, Task]:
        """Save each drawn task's images, then record its end: success, or a failure with its reason
        (and its refund) when the images could not be saved."""
        ended: dict[str, Task] = {}
        for task, output in drawn:
            try:
                result = self._save(task, output)  # images first: no row names an image not in the store
            except JourneydError as error:  # StorageUnavailable included
                log.error("task %s: its images could not be saved: %s", task.id, error)
                reason = error.message
            except Exception as error:
                log.error("task %s: its images could not be saved:\n%s", task.id, traceback.format_exc())
                reason = f"its images could not be saved: {type(error).__name__}: {error}"
            else:
                ended[task.id] = finish(task, Status.SUCCESS, result=result, engine=self.engine.name)
                continue
            ended[task.id] = finish(task, Status.FAILURE, fail_reason=reason)
        return ended

    def _finish(self, task: Task, status: Status, *, previewed: bool, **fields: object) -> Task:
        """Record the task's end; `previewed`: a step preview may be in the store, to delete now."""
        try:
            done = self.store.finish(task.id, self.id, status, self.clock.now_ms(), **fields)  # type: ignore[arg-type]
        except StorageUnavailable as error:  # the row keeps its lease: the lease reclaim requeues it
            log.error("task %s: could not record its end (%s); it runs again once its lease runs out", task.id, error)
            return task
        if done is None:  # our lease ran out and another run holds the task: what we saved is a stray
            log.warning("task %s: lease lost before its end was recorded, leaving it to its new worker", task.id)
            self._discard_outputs(task)
        else:
            if previewed:  # previews are for while it runs
                self.try_images(self.images.delete, f"{task.id}/{PREVIEW}")
            if status is not Status.SUCCESS:
                self._discard_outputs(task)
        return done or self.store.get_task(task.id) or task

    def try_images(self, call: Callable[..., None], key: str, *data: bytes) -> bool:
        """A preview or a clean-up, which a task does not depend on: storage trouble is logged, not raised
        (the images the task's result names are saved with `put_many`, which does raise)."""
        try:
            call(key, *data)
        except StorageUnavailable as error:
            log.warning("%s of %s skipped: %s", call.__name__, key, error)
            return False
        return True

    def _discard_outputs(self, task: Task) -> None:
        """A run that did not end in success leaves no images behind (its inputs stay: mask, prompts)."""
        for name in [*(f"{i}.png" for i in range(CANDIDATES)), "grid.png"]:
            self.try_images(self.images.delete, output_key(task, name))

    def _inputs(self, task: Task) -> Inputs:
        def load(key: str):  # type: ignore[no-untyped-def]
            return decode_png(self.images.get(key))

        mask = load(task.args["mask"]) > 127 if "mask" in task.args else None

        def load_all(name: str) -> list[np.ndarray]:
            return [load(key) for key in task.args.get(name, [])]

        return Inputs(
            source=load(task.args["source"]) if "source" in task.args else None,
            mask=mask.squeeze() if mask is not None and mask.ndim == 3 else mask,
            image_prompts=load_all("image_prompts"),
            style_refs=load_all("style_refs"),
            character_refs=load_all("character_refs"),
            images=load_all("images"),
        )

    def _save(self, task: Task, rendered: Rendered) -> Result:
        """Put the images on the disk (synced, when durable) before the row that names them commits."""
        files = [(output_key(task, f"{i}.png"), encode_png(image)) for i, image in enumerate(rendered.images)]
        keys = tuple(key for key, _ in files)
        grid = keys[0] if keys else ""  # Shorten answers in words only
        if rendered.kind == "grid":
            grid = output_key(task, "grid.png")
            files.append((grid, encode_png(make_grid(rendered.images))))
        if files:
            self.images.put_many(files)
        height, width = rendered.images[0].shape[:2] if rendered.images else (0, 0)
        return Result(
            rendered.kind,
            keys,
            grid,
            width,
            height,
            rendered.feather_px,
            rendered.changed_beyond_feather,
            rendered.prompts,
            rendered.weights,
        )
