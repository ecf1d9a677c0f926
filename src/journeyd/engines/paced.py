"""`PacedEngine`: a GPU's time without its work, for load tests and the fleet benchmark.

On a fleet, drawing happens on the GPU while the worker's CPU waits. A benchmark that runs eight
workers on one small machine with a CPU engine measures the engine fighting for cores, not the
fleet. This engine's Imagine waits a fixed time, in steps (so progress, the lease, cancels and
previews run as they do for a real model), and draws a flat picture per seed; every other action is
the classic engine's.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import numpy as np

from journeyd.domain.prompt import PromptSpec
from journeyd.engines.base import Image, Progress
from journeyd.engines.classic import ClassicEngine

STEPS = 10


class PacedEngine(ClassicEngine):
    name = "paced"

    def __init__(self, task_s: float, base_size: int = 64) -> None:
        super().__init__(base_size)
        self.task_s = task_s

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
        self.check(prompt)
        width, height = size
        started = time.monotonic()
        progress(0, STEPS)
        for step in range(1, STEPS + 1):
            # on time however long the bookkeeping took: each task takes task_s, as a GPU's would
            time.sleep(max(0.0, started + self.task_s * step / STEPS - time.monotonic()))
            progress(step, STEPS)
        return [_flat(prompt.render(), seed, width, height) for seed in seeds]


def _flat(text: str, seed: int, width: int, height: int) -> Image:
    colour = hashlib.sha256(f"{text}\0{seed}".encode()).digest()[:3]
    return np.broadcast_to(np.frombuffer(colour, np.uint8), (height, width, 3)).copy()
