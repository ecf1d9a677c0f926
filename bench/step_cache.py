"""The `cache` lever (DeepCache, engines/diffusion/step_cache.py) against the plain diffusers UNet.

Full-size SD 1.5 (512²) and SDXL (1024²) UNets with random weights (bench/engine_gpu.py's
architectures: the released models' work) at one image with CFG (batch 2), in the dtype
journeyd picks on this machine. Side by side, alternating, best of --reps:

  * diffusers: one UNet forward, as every step of a plain pipeline call runs;
  * journeyd, whole: a forward of the UNet with the step cache on, on a step it runs whole;
  * journeyd, skipped: the same, on a step it skips (outermost blocks only, deep features kept).

From those, the UNet time of a 30-step call: diffusers runs 30 whole forwards, journeyd 10 whole
and 20 skipped (the cache's schedule). FLOPs are counted on both kinds of forward (on a
meta-device copy, with bench/engine_gpu.py's counters). The skipping costs the same FLOPs on any
device, so the FLOP ratio is the lever's ceiling; the times say how much of it a device keeps (on a
GPU, small outermost-block kernels run below peak). As a check, a skipped forward on the very input
its whole forward saw must return the same output.

    python bench/step_cache.py                   # both families; writes bench/results/step_cache-<time>.json
    python bench/step_cache.py --family sd15 --reps 3
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import write_report
from engine_gpu import FULL, _count_flops, _meta_unet, _skipped_call_flops
from journeyd.engines.diffusion.loading import pick_device
from journeyd.engines.diffusion.step_cache import INTERVAL, MIN_STEPS, add_step_cache

STEPS = 30


def tick() -> float:
    """Now, once the device has done what it was given."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def unet_inputs(family: str, dtype: torch.dtype, batch: int) -> dict[str, Any]:
    config = FULL[family]["unet"]
    side = config["sample_size"]
    inputs: dict[str, Any] = {
        "sample": torch.randn(batch, 4, side, side, dtype=dtype),
        "timestep": torch.tensor([500] * batch),
        "encoder_hidden_states": torch.randn(batch, 77, config["cross_attention_dim"], dtype=dtype),
    }
    if family == "sdxl":
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, 1280, dtype=dtype),
            "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * batch, dtype=dtype),
        }
    return inputs


def bench_family(family: str, dtype: torch.dtype, batch: int, reps: int) -> dict[str, Any]:
    from diffusers import UNet2DConditionModel

    def build() -> torch.nn.Module:  # made in `dtype` directly: SDXL in float32 first would not fit 24 GiB twice
        torch.manual_seed(0)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            return UNet2DConditionModel.from_config(FULL[family]["unet"]).eval()
        finally:
            torch.set_default_dtype(previous)

    plain, cached = build(), build()
    add_step_cache(cached)
    inputs = unet_inputs(family, dtype, batch)

    def whole_then_skipped() -> tuple[float, float, torch.Tensor, torch.Tensor]:
        with cached.step_cache.active(MIN_STEPS):
            start = tick()
            whole = cached(**inputs).sample
            middle = tick()
            skipped = cached(**inputs).sample
            return middle - start, tick() - middle, whole, skipped

    runs: dict[str, list[float]] = {"diffusers": [], "journeyd whole": [], "journeyd skipped": []}
    with torch.no_grad():
        for rep in range(reps + 1):  # the first round warms up
            start = tick()
            plain(**inputs)
            plain_s = tick() - start
            whole_s, skipped_s, whole, skipped = whole_then_skipped()
            if rep:
                runs["diffusers"].append(plain_s)
                runs["journeyd whole"].append(whole_s)
                runs["journeyd skipped"].append(skipped_s)
    meta = _meta_unet(FULL[family]["unet"], dtype)  # FLOPs counted as the engine bench counts them, with no compute
    whole_flops, skipped_flops = _count_flops(meta, **inputs), _skipped_call_flops(meta, (), inputs)

    best = {name: min(times) for name, times in runs.items()}
    whole_steps = math.ceil(STEPS / INTERVAL)
    diffusers_s = STEPS * best["diffusers"]
    journeyd_s = whole_steps * best["journeyd whole"] + (STEPS - whole_steps) * best["journeyd skipped"]
    flop_ratio = STEPS * whole_flops / (whole_steps * whole_flops + (STEPS - whole_steps) * skipped_flops)
    result = {
        "unet_input": list(inputs["sample"].shape),
        "image": f"{FULL[family]['size']}x{FULL[family]['size']}",
        "best_s": best,
        "runs_s": runs,
        "tflop_per_whole_forward": whole_flops / 1e12,
        "tflop_per_skipped_forward": skipped_flops / 1e12,
        "skipped_share_of_flops": skipped_flops / whole_flops,
        "skipped_share_of_time": best["journeyd skipped"] / best["journeyd whole"],
        "skipped_equals_whole_on_same_input": bool(torch.equal(whole, skipped)),
        f"unet_s_{STEPS}_steps": {"diffusers": diffusers_s, "journeyd": journeyd_s},
        "speedup_vs_diffusers": diffusers_s / journeyd_s,
        "speedup_ceiling_from_flops": flop_ratio,
    }
    print(
        f"{family}: whole {best['journeyd whole']:.2f} s (diffusers {best['diffusers']:.2f} s), skipped "
        f"{best['journeyd skipped']:.2f} s ({skipped_flops / whole_flops:.1%} of the FLOPs); {STEPS} steps: "
        f"{diffusers_s:.1f} s -> {journeyd_s:.1f} s, {diffusers_s / journeyd_s:.2f}x (FLOP ceiling {flop_ratio:.2f}x)"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=("sd15", "sdxl", "both"), default="both")
    parser.add_argument("--batch", type=int, default=2, help="UNet batch (2 = one image with CFG)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--device", help="cpu (default) or cuda")
    args = parser.parse_args()

    device, dtype = pick_device(args.device or "cpu", None)
    torch.set_default_device(device)
    families = ("sd15", "sdxl") if args.family == "both" else (args.family,)
    import diffusers

    write_report(
        "step_cache",
        {
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "dtype": str(dtype).removeprefix("torch."),
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
            "interval": INTERVAL,
            "steps": STEPS,
            "families": {family: bench_family(family, dtype, args.batch, args.reps) for family in families},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
