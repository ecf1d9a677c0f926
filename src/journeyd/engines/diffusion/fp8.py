"""The `fp8` speed lever: the denoiser's big matrix products in float8 (e4m3) on tensor cores.

Hopper and Ada GPUs multiply float8 matrices at twice their bf16 rate, and linear layers are most
of a UNet's or FLUX transformer's work (64% of SDXL's UNet FLOPs). Each linear layer inside the
repeated blocks (the ones regional compile compiles) keeps its weight in float8 with one scale per
output channel, computed once at load; its input is scaled per row on the fly, and `torch._scaled_mm`
does the product with float32 accumulation, the result in the model's dtype. Row-wise scales keep
the error near float8's own rounding (a few parts in a hundred per product), and the pictures close
to the bf16 ones; eager, the on-the-fly scaling costs passes over the activations that regional
compile fuses away, so the lever is meant to be pulled together with `compile`.

The float8 weight and its float32 scales are stored as uint8 and int32 bit patterns: diffusers casts
whole pipelines with `.to(dtype)` (`from_pipe` does), which would turn float8 or float32 buffers into
bf16 and wreck them; integer buffers are left alone, and viewing them back costs nothing.
"""

from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
_TINY = 1e-12  # a row of zeros gets this scale instead of dividing by zero


class Fp8Linear(torch.nn.Module):
    """A drop-in for `torch.nn.Linear` whose product runs in float8 (see the module's docstring)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=_TINY) / FP8_MAX
        self.register_buffer("weight_bits", (weight / scale).to(FP8).view(torch.uint8))
        self.register_buffer("scale_bits", scale.t().contiguous().view(torch.int32))  # (1, out_features)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        scale = rows.abs().amax(dim=1, keepdim=True).float().clamp(min=_TINY) / FP8_MAX
        out = torch._scaled_mm(
            (rows / scale).to(FP8),
            self.weight_bits.view(FP8).t(),  # column-major, as the fp8 kernels want their right side
            scale_a=scale,
            scale_b=self.scale_bits.view(torch.float32),
            bias=self.bias,
            out_dtype=x.dtype,
        )
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, float8 e4m3"


def fp8_supported(device: torch.device) -> str | None:
    """None if `device` can run float8 products, else why not."""
    if device.type == "cpu":
        return None  # slow, but exact to the same rounding: what the tests use
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9):
        return None
    return "fp8 needs an NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper) or the CPU"


def quantize_blocks(net: torch.nn.Module) -> int:
    """Swap every linear layer inside `net`'s repeated blocks for an `Fp8Linear`, in place; returns
    how many. Layers whose sides are not multiples of 16 (the fp8 kernels' tile) stay as they are."""
    blocks = set(getattr(net, "_repeated_blocks", ()))
    swapped = 0
    for block in (m for m in net.modules() if type(m).__name__ in blocks):
        for name, child in list(block.named_modules()):
            if type(child) is torch.nn.Linear and child.in_features % 16 == 0 and child.out_features % 16 == 0:
                parent_name, _, attribute = name.rpartition(".")
                setattr(block.get_submodule(parent_name), attribute, Fp8Linear(child))
                swapped += 1
    return swapped
