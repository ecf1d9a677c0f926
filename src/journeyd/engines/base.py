"""The Engine seam: pixels in, pixels out.

An engine knows nothing of tasks, ids, billing or HTTP. It receives images (HxWx3 uint8 RGB numpy
arrays), masks (HxW bool, True = repaint), the parsed prompt and seeds, and returns images.
Compositing the result back onto the parent is not the engine's job: `imaging.composite` does it
once, so every engine keeps pixels beyond the feather bit-identical to the parent for free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from journeyd.domain.prompt import PromptSpec

Image = np.ndarray  # HxWx3 uint8, RGB
Mask = np.ndarray  # HxW bool, True where the engine must paint

UpscaleMode = Literal["subtle", "creative"]
InpaintKind = Literal["region", "outpaint"]


SHORTENED_OPTIONS = 5  # Midjourney's /shorten offers five shorter prompts
DESCRIBED_PROMPTS = 4  # and /describe four prompts


@dataclass(frozen=True)
class Shortened:
    """What /shorten finds in a prompt."""

    weights: list[tuple[str, float]]  # each phrase of the prompt and its weight 0..1 (1 = most important), in order
    prompts: list[str]  # exactly five shorter prompts, most important words first, all distinct


class EngineOutOfMemory(Exception):
    """The device ran out of memory for one call; its message says for what. Nothing is wrong with the
    task itself: run alone instead of in a batch, it may fit."""


class Progress(Protocol):
    """Called by engines as work advances. It raises `TaskCancelled` when the task was cancelled,
    so an engine stops at its next step without checking anything itself. An engine may pass a
    rough `preview` of the images so far (HxWx3 uint8), which clients see while the task runs."""

    def __call__(self, done: int, total: int, preview: Image | None = None) -> None: ...


class PromptRules(Protocol):
    """What an engine accepts, which submits are checked against. An engine is its own rules; an API
    node of a fleet, which draws nothing, gets its configuration's without loading the engine
    (`engines.load_prompt_rules`), so it accepts exactly what its workers accept."""

    name: str

    def check(self, prompt: PromptSpec) -> None:
        """Refuse, at submit time, a prompt this engine cannot serve (an unmapped --v, say) with
        `InvalidRequest`, so the client gets a 4xx instead of a failed task."""
        ...

    def check_blend(self, prompt: PromptSpec) -> None:
        """As `check`, for a blend of images with this prompt (the diffusers engine needs an IP-Adapter)."""
        ...

    def check_describe(self) -> None:
        """Refuse a describe this engine cannot do (the diffusers engine needs a captioning model)."""
        ...

    def check_shorten(self, prompt: PromptSpec) -> None:
        """Refuse a prompt too short to give five shorter ones."""
        ...


@runtime_checkable
class Engine(PromptRules, Protocol):
    def canvas_size(self, prompt: PromptSpec) -> tuple[int, int]:
        """(width, height) this engine draws a new image at for the prompt's --ar (and model)."""
        ...

    def generate(
        self,
        prompt: PromptSpec,
        size: tuple[int, int],
        seeds: Sequence[int],
        progress: Progress,
        init_images: Sequence[Image] = (),
        *,
        style_refs: Sequence[Image] = (),
        character_refs: Sequence[Image] = (),
    ) -> list[Image]:
        """Imagine: one image per seed at `size`. `init_images` are image prompts to follow (weight: the
        prompt's --iw); `style_refs` are --sref images (--sw: `prompt.style_weight`), `character_refs` --cref
        images (--cw: `prompt.character_weight`). An engine that cannot follow references refuses them in
        `check`, at submit, so it never receives any."""
        ...

    def vary(
        self, image: Image, prompt: PromptSpec, strength: float, seeds: Sequence[int], progress: Progress
    ) -> list[Image]:
        """Vary (Subtle/Strong), V1-V4: one variation per seed, same size as `image`.
        strength 0 returns the image, 1 ignores it."""
        ...

    def upscale(self, image: Image, prompt: PromptSpec, mode: UpscaleMode, seed: int, progress: Progress) -> Image:
        """Upscale (Subtle/Creative): twice the width and height."""
        ...

    def inpaint(
        self,
        image: Image,
        mask: Mask,
        prompt: PromptSpec,
        seeds: Sequence[int],
        kind: InpaintKind,
        progress: Progress,
    ) -> list[Image]:
        """Repaint the masked pixels, one candidate per seed, each the size of `image`.

        `kind` is "region" for Vary (Region) and "outpaint" for Zoom Out and Pan, where the
        masked area is new canvas that was pre-filled from the image's edges. Pixels outside the
        mask may come back changed; the caller composites them away.
        """
        ...

    def describe(self, image: Image, seed: int, progress: Progress) -> list[str]:
        """/describe: exactly four distinct prompts for the image, in this order: a caption; the caption
        and its style; the caption and its lighting/composition; a shortened one. Another seed may
        word them differently (Midjourney's Retry button)."""
        ...

    def blend(
        self,
        images: Sequence[Image],
        prompt: PromptSpec,
        size: tuple[int, int],
        seeds: Sequence[int],
        progress: Progress,
    ) -> list[Image]:
        """/blend: one image per seed at `size`, mixing the 2..5 `images` (`prompt` may be empty)."""
        ...

    def shorten(self, prompt: PromptSpec) -> Shortened:
        """/shorten: how much each phrase of the prompt matters to this engine, and five shorter prompts."""
        ...


@runtime_checkable
class BatchEngine(Protocol):
    """An engine that can draw several Imagine tasks in one call, as a GPU engine gains from: the
    worker asks for the batch key of queued tasks, and runs back-to-back tasks with equal keys
    together. (Only what batching needs: `isinstance` checks every member, and an engine batches
    whatever other actions it has.)"""

    def canvas_size(self, prompt: PromptSpec) -> tuple[int, int]: ...

    def batch_key(self, prompt: PromptSpec) -> object | None:
        """Tasks whose keys are equal can share one `generate_batch` call; None: this one cannot."""
        ...

    def generate_batch(
        self, jobs: Sequence[tuple[PromptSpec, Sequence[int]]], size: tuple[int, int], progress: Sequence[Progress]
    ) -> list[list[Image]]:
        """Imagine for each (prompt, seeds) job at once, each job reporting to its own progress (with
        its own preview); images per job, as `generate` would return them. A progress that raises
        stops the whole call."""
        ...


ANY_MODEL = "*"


def served_models(engine: PromptRules) -> list[str] | None:
    """The routing labels (`domain.routing.routing_label`) this engine can draw; None: any.

    An engine with a `versions` table (the diffusers engine) serves the labels its profiles list, plus
    "default" (a prompt with no --v/--niji gets its first profile); a profile listing "*" serves any.
    An engine without one (classic) draws every version."""
    versions = getattr(engine, "versions", None)
    if versions is None:
        return None
    served = [str(label) for label in versions.served()]
    if ANY_MODEL in served:
        return None
    return sorted({*served, "default"})
