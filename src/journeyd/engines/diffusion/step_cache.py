"""The `cache` lever: DeepCache (Ma, Fang and Wang, CVPR 2024) on a UNet.

From one step to the next, what a UNet computes below its outermost blocks changes little, while
the outermost blocks, at full resolution, carry the detail. So every `INTERVAL`th step runs the
whole UNet and keeps what its second-to-last up block returned; the steps between run only the
outermost down block and the outermost up block, which is fed the kept features and the fresh
skip connections as usual (plus the input and output convolutions and the embeddings). The rest
of the UNet's forward runs as diffusers wrote it: the skipped blocks' `forward` returns at once.

A skipped step costs about 7% of a whole one on SDXL and about 38% on SD 1.5, whose outermost
blocks hold attention (bench/step_cache.py counts them). It changes the pictures (the paper
trades a small loss of quality for its speed), so it is opt-in, and a call of fewer than
`MIN_STEPS` steps (few-step models) runs every step whole: there each step matters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

INTERVAL = 3  # one whole step in three (the paper's N = 3)
MIN_STEPS = 10


class StepCache:
    """DeepCache on one UNet, idle except inside `active`."""

    def __init__(self, unet: torch.nn.Module) -> None:
        if len(unet.up_blocks) < 2 or len(unet.down_blocks) < 2:
            raise ValueError(f"cache: {type(unet).__name__} has too few blocks to skip any")
        self.on = False
        self.skipping = False
        self.step = 0
        self.kept: torch.Tensor | None = None
        for block in unet.down_blocks[1:]:
            outputs = len(block.resnets) + len(getattr(block, "downsamplers", None) or ())
            self._skip(block, _down_stub(outputs))
        if unet.mid_block is not None:
            self._skip(unet.mid_block, _input)
        for block in unet.up_blocks[:-1]:
            self._skip(block, lambda *args, **kwargs: self.kept)
        unet.up_blocks[-2].register_forward_hook(self._keep)
        unet.register_forward_pre_hook(self._start_step)

    @contextmanager
    def active(self, steps: int) -> Iterator[None]:
        """On for one pipeline call of `steps` denoising steps (whole steps only if too few)."""
        self.on, self.step, self.kept = steps >= MIN_STEPS, 0, None
        try:
            yield
        finally:
            self.on, self.skipping, self.kept = False, False, None

    def _start_step(self, unet: torch.nn.Module, args: Any) -> None:
        self.skipping = self.on and self.kept is not None and self.step % INTERVAL != 0
        self.step += 1

    def _keep(self, block: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
        if self.on and not self.skipping:
            self.kept = output

    def _skip(self, block: torch.nn.Module, stub: Callable[..., Any]) -> None:
        whole = block.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            return stub(*args, **kwargs) if self.skipping else whole(*args, **kwargs)

        block.forward = forward  # an instance attribute: nn.Module.__call__ finds it first


def _input(*args: Any, **kwargs: Any) -> torch.Tensor:
    """A skipped block's output where nothing reads it: its input, as it costs nothing."""
    return kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]


def _down_stub(outputs: int) -> Callable[..., tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
    """A skipped down block: the skip connections it would give have their count right (the UNet
    hands them out to the up blocks by count) and are read only by skipped up blocks."""

    def stub(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        sample = _input(*args, **kwargs)
        return sample, (sample,) * outputs

    return stub


def add_step_cache(net: torch.nn.Module) -> None:
    """Give a UNet the `cache` lever (FLUX's transformer has no UNet levels to skip)."""
    if not hasattr(net, "up_blocks"):
        raise ValueError(
            f"cache: {type(net).__name__} is not a UNet; the step cache works on SD 1.5 and SDXL "
            "(give it to those profiles alone, with their own speedups)"
        )
    net.step_cache = StepCache(net)


@contextmanager
def caching(net: torch.nn.Module, steps: int) -> Iterator[None]:
    """The step cache of `net`, if it has one, on for a call of `steps` steps."""
    cache: StepCache | None = getattr(net, "step_cache", None)
    if cache is None:
        yield
        return
    with cache.active(steps):
        yield
