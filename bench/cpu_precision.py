"""journeyd's dtype on the CPU against diffusers' default (float32), for the full-size SD 1.5 UNet.

diffusers loads a model in float32 unless told otherwise. journeyd's `pick_device` picks bf16 on a CPU
that does bf16 natively (AVX512-BF16, AMX) and float32 on others. This times one UNet forward (random
weights: the same work as the released model) in both, side by side, alternating, best of --reps, at a
small latent so it runs in a minute on two cores.

    python bench/cpu_precision.py          # writes bench/results/cpu_precision-<time>.json
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import write_report
from journeyd.engines.diffusion.loading import cpu_has_bf16, pick_device


def sd15_unet() -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(  # stable-diffusion-v1-5's unet/config.json
        sample_size=64,
        cross_attention_dim=768,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=8,
        layers_per_block=2,
    ).eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latent", type=int, default=32, help="latent side (32 = a 256² image)")
    parser.add_argument("--batch", type=int, default=2, help="UNet batch (2 = one image with CFG)")
    parser.add_argument("--reps", type=int, default=4)
    args = parser.parse_args()

    ours = pick_device("cpu")[1]
    sides = {"diffusers (float32)": (sd15_unet(), torch.float32)}
    sides[f"journeyd ({str(ours).removeprefix('torch.')})"] = (copy.deepcopy(sides["diffusers (float32)"][0]), ours)
    for unet, dtype in sides.values():
        unet.to(dtype)
    sample = torch.randn(args.batch, 4, args.latent, args.latent)
    timestep, text = torch.tensor([500] * args.batch), torch.randn(args.batch, 77, 768)
    runs: dict[str, list[float]] = {name: [] for name in sides}
    with torch.no_grad():
        for rep in range(args.reps + 1):  # the first round warms up
            for name, (unet, dtype) in sides.items():
                start = time.perf_counter()
                unet(sample.to(dtype), timestep, text.to(dtype))
                if rep:
                    runs[name].append(time.perf_counter() - start)
    best = {name: min(times) for name, times in runs.items()}
    baseline, journeyd = best["diffusers (float32)"], best[next(name for name in sides if name.startswith("journeyd"))]
    for name, seconds in best.items():
        print(f"{name:<24} {seconds:7.3f} s per UNet forward")
    print(f"speed-up {baseline / journeyd:.2f}x")
    write_report(
        "cpu_precision",
        {
            "native_bf16": cpu_has_bf16(),
            "versions": {"torch": torch.__version__},
            "case": f"SD 1.5 UNet forward, batch {args.batch}, latent {args.latent}² ({args.latent * 8}² image)",
            "best_of": args.reps,
            "seconds": best,
            "runs_s": runs,
            "speedup_vs_diffusers": baseline / journeyd,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
