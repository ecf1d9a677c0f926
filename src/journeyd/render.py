"""How each op turns its inputs into pixels: engine calls plus the one compositing step.

Knows ops and images; knows nothing of rows, queues or HTTP. Region, Zoom and Pan all end in
`imaging.composite`, which is what keeps pixels beyond the feather bit-identical to the parent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from journeyd.domain.buttons import ResultKind
from journeyd.domain.errors import JourneydError
from journeyd.domain.lifecycle import Op
from journeyd.domain.task import Task
from journeyd.engines.base import DESCRIBED_PROMPTS, SHORTENED_OPTIONS, BatchEngine, Engine, Image, Mask, Progress
from journeyd.imaging.canvas import Canvas, pan_canvas, zoom_canvas
from journeyd.imaging.colour import match_colour
from journeyd.imaging.composite import changed_beyond, composite, dilate, feather, feather_for

VARY_STRENGTH = {Op.VARY_SUBTLE: 0.5, Op.VARY_STRONG: 0.85}
CANDIDATES = 4


@dataclass
class Inputs:
    source: Image | None = None  # the parent image this task starts from
    mask: Mask | None = None  # Vary (Region): True = repaint, at the source's size
    image_prompts: list[Image] = field(default_factory=list)
    style_refs: list[Image] = field(default_factory=list)  # --sref images
    character_refs: list[Image] = field(default_factory=list)  # --cref images
    images: list[Image] = field(default_factory=list)  # Blend and Describe: the images the client sent


@dataclass
class Rendered:
    images: list[Image]
    kind: ResultKind
    feather_px: int = 0  # composited ops: the feather's width
    changed_beyond_feather: tuple[int, ...] = ()  # composited ops: per image, pixels beyond it unlike the parent
    prompts: tuple[str, ...] = ()  # Describe, Shorten
    weights: tuple[tuple[str, float], ...] = ()  # Shorten


def seeds_for(seed: int) -> list[int]:
    """One seed per candidate, so any tile can be reproduced alone from the task seed + its index."""
    return [(seed + i) % 2**32 for i in range(CANDIDATES)]


def render(task: Task, inputs: Inputs, engine: Engine, progress: Progress, *, max_output_pixels: int) -> Rendered:
    spec, seeds, op = task.spec, seeds_for(task.seed), task.op
    if op is Op.GENERATE:
        size = engine.canvas_size(spec)
        references = {
            name: refs
            for name, refs in (("style_refs", inputs.style_refs), ("character_refs", inputs.character_refs))
            if refs  # only when there are some: an engine that takes none is never handed the keywords
        }
        return Rendered(engine.generate(spec, size, seeds, progress, inputs.image_prompts, **references), "grid")
    if op is Op.BLEND:
        return Rendered(engine.blend(inputs.images, spec, engine.canvas_size(spec), seeds, progress), "grid")
    if op is Op.DESCRIBE:
        image = inputs.images[0]
        prompts = _distinct(engine.describe(image, task.seed, progress), DESCRIBED_PROMPTS, "describe")
        return Rendered([image], "describe", prompts=prompts)
    if op is Op.SHORTEN:
        shortened = engine.shorten(spec)
        progress(1, 1)
        prompts = _distinct(shortened.prompts, SHORTENED_OPTIONS, "shorten")
        return Rendered([], "shorten", prompts=prompts, weights=tuple(shortened.weights))

    source = _required(inputs.source, "source image")
    if op is Op.PICK:
        progress(1, 1)
        return Rendered([source], "single")
    if op in (Op.UPSCALE_SUBTLE, Op.UPSCALE_CREATIVE):
        mode = "creative" if op is Op.UPSCALE_CREATIVE else "subtle"
        image = source
        for _ in range(int(math.log2(task.args.get("factor", 2)))):
            image = engine.upscale(image, spec, mode, task.seed, progress)
        return Rendered([image], "single")
    if op in VARY_STRENGTH:
        return Rendered(engine.vary(source, spec, VARY_STRENGTH[op], seeds, progress), "grid")
    if op is Op.VARY_REGION:
        mask = _required(inputs.mask, "mask")
        dilate_px, feather_px = feather_for(source.shape[1], source.shape[0])
        grown = dilate(mask, dilate_px)
        candidates = engine.inpaint(source, grown, spec, seeds, "region", progress)
        return _blend(source, candidates, grown, feather_px)
    if op is Op.ZOOM_OUT:
        aspect = task.args.get("aspect")
        canvas = _fit(
            source,
            max_output_pixels,
            lambda image: zoom_canvas(
                image,
                task.args.get("zoom", 2.0),
                square=task.args.get("square", False),
                aspect=tuple(aspect) if aspect else None,
            ),
        )
        return _outpaint(canvas, engine, task, seeds, progress)
    if op is Op.PAN:
        canvas = _fit(source, max_output_pixels, lambda image: pan_canvas(image, task.args["direction"]))
        return _outpaint(canvas, engine, task, seeds, progress)
    raise ValueError(f"no renderer for op {op}")


def batch_key(task: Task, engine: Engine) -> object | None:
    """Which queued tasks can be drawn in one engine call: Imagine without image prompts or references,
    on an engine that batches, with equal keys (the engine says what must match)."""
    if task.op is not Op.GENERATE or not isinstance(engine, BatchEngine):
        return None
    if any(task.args.get(name) for name in ("image_prompts", "style_refs", "character_refs")):
        return None
    try:
        return engine.batch_key(task.spec)
    except JourneydError:  # a --v no longer served, say: the task runs alone, and fails with the reason
        return None


def render_batch(tasks: Sequence[Task], engine: BatchEngine, progress: Sequence[Progress]) -> list[Rendered]:
    """Imagine for tasks of one `batch_key`, in one call; each task reports to its own progress."""
    size = engine.canvas_size(tasks[0].spec)
    grids = engine.generate_batch([(task.spec, seeds_for(task.seed)) for task in tasks], size, progress)
    return [Rendered(images, "grid") for images in grids]


def _outpaint(canvas: Canvas, engine: Engine, task: Task, seeds: list[int], progress: Progress) -> Rendered:
    height, width = canvas.mask.shape
    _, feather_px = feather_for(width, height)
    candidates = engine.inpaint(canvas.image, canvas.mask, task.spec, seeds, "outpaint", progress)
    return _blend(canvas.image, candidates, canvas.mask, feather_px)


def _blend(parent: Image, candidates: list[Image], mask: Mask, feather_px: int) -> Rendered:
    """Colour-match each candidate to the parent around the mask, then composite it through the
    feather: the new region agrees with its surroundings, and pixels beyond stay the parent's. Each
    result is then checked against the parent beyond the feather, and the count kept with it."""
    how = feather(mask, feather_px)
    beyond = how.beyond()

    def blend(candidate: Image) -> tuple[Image, int]:
        image = composite(parent, match_colour(candidate, parent, how.ramp), how)
        return image, changed_beyond(parent, image, beyond)

    # One thread per candidate: OpenCV and NumPy's copies and gathers release the GIL, and on a GPU
    # server this runs while the GPU waits (a 2x zoom blends four 2048² images).
    with ThreadPoolExecutor(max(1, len(candidates))) as pool:
        blended = list(pool.map(blend, candidates))
    return Rendered([image for image, _ in blended], "grid", feather_px, tuple(count for _, count in blended))


def _fit(source: Image, max_pixels: int, make_canvas) -> Canvas:  # type: ignore[no-untyped-def]
    """Build the canvas; if it would exceed `max_pixels`, shrink the source first (then, and only
    then, the parent's pixels are resampled)."""
    canvas = make_canvas(source)
    height, width = canvas.mask.shape
    if width * height <= max_pixels:
        return canvas
    scale = math.sqrt(max_pixels / (width * height)) * 0.99
    h, w = source.shape[:2]
    smaller = cv2.resize(source, (max(8, int(w * scale)), max(8, int(h * scale))), interpolation=cv2.INTER_AREA)
    return make_canvas(smaller)


def _distinct(prompts: Sequence[str], count: int, what: str) -> tuple[str, ...]:
    """The engine's prompts, checked: a button per prompt, so each must be there, and differ."""
    cleaned = tuple(" ".join(p.split()) for p in prompts)
    if len(cleaned) != count or len(set(cleaned)) != count or not all(cleaned):
        raise ValueError(f"the engine's {what} gave {len(cleaned)} prompts, not {count} distinct ones: {cleaned!r}")
    return cleaned


def _required(value: np.ndarray | None, name: str) -> np.ndarray:
    if value is None:
        raise ValueError(f"task is missing its {name}")
    return value
