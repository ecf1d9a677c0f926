"""journeyd's own image work around the model, for Vary (Region) and Zoom Out 2x, on the CPU.

A Region or Zoom task does CPU work before and after the diffusion call: the hole is pre-filled
(`blur_fill`, at the model's working size), and each of the 4 candidates is colour-matched and
composited onto the parent (`render._blend`, at the parent's size; a 2x zoom of a 1024² image is a
2048² canvas). On a GPU this work runs while the GPU waits, so it adds straight to latency: this
script times it alone, with no model, so that changes to it can be compared on any machine
(run it at two commits). The same inputs every run (seeded); best of --reps.

    python bench/render_overhead.py            # writes bench/results/render_overhead-<time>.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from common import write_report  # noqa: E402
from journeyd.imaging.canvas import zoom_canvas  # noqa: E402
from journeyd.imaging.composite import dilate, feather_for  # noqa: E402
from journeyd.imaging.fill import blur_fill  # noqa: E402
from journeyd.render import _blend  # noqa: E402


def _picture(side: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    rgb = np.stack([0.5 + 0.4 * np.sin(6 * x + 2 * y), 0.5 + 0.4 * np.cos(3 * y - x), 0.3 + 0.5 * x * y], -1)
    return (np.clip(rgb + rng.normal(0, 0.03, rgb.shape), 0, 1) * 255).astype(np.uint8)


def _candidates(parent: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Four candidates with a colour cast each, as a VAE round trip leaves them."""
    return [np.clip(parent.astype(int) + rng.integers(-30, 30, 3), 0, 255).astype(np.uint8) for _ in range(4)]


def _best(work: Callable[[], Any], reps: int) -> float:
    work()  # warm-up: thread pools, first allocations
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def cases(side: int) -> dict[str, tuple[Callable[[], Any], str]]:
    rng = np.random.default_rng(1234)
    parent = _picture(side, rng)
    region = np.zeros((side, side), bool)
    half = round(side * 0.2)
    region[side // 2 - half : side // 2 + half, side // 2 - half : side // 2 + half] = True
    dilate_px, feather_px = feather_for(side, side)
    grown = dilate(region, dilate_px)
    canvas = zoom_canvas(parent, 2.0)
    zoom_side = canvas.mask.shape[0]
    region_candidates, zoom_candidates = _candidates(parent, rng), _candidates(canvas.image, rng)
    zoom_feather = feather_for(zoom_side, zoom_side)[1]
    # the engine pre-fills the canvas at the model's working size, as here
    zoom_work = cv2.resize(canvas.image, (side, side), interpolation=cv2.INTER_AREA)
    zoom_hole = cv2.resize(canvas.mask.astype(np.uint8) * 255, (side, side), interpolation=cv2.INTER_LINEAR) >= 128
    return {
        "region_prefill": (lambda: blur_fill(parent, grown), f"{side}x{side}, square hole 40% of the side"),
        "region_blend_4": (lambda: _blend(parent, region_candidates, grown, feather_px), f"{side}x{side}"),
        "zoom_prefill": (lambda: blur_fill(zoom_work, zoom_hole), f"{zoom_side}² canvas at {side}x{side}"),
        "zoom_blend_4": (lambda: _blend(canvas.image, zoom_candidates, canvas.mask, zoom_feather), f"{zoom_side}²"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=1024, help="parent image side (default 1024, SDXL's)")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    results = {}
    for name, (work, size) in cases(args.side).items():
        results[name] = {"seconds": _best(work, args.reps), "size": size}
        print(f"{name:<16} {results[name]['seconds'] * 1000:8.1f} ms  ({size})")
    write_report(
        "render_overhead",
        {
            "device": {"opencv_threads": cv2.getNumThreads()},
            "versions": {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__},
            "reps": args.reps,
            "results": results,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
