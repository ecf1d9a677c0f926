"""Control-plane benchmark: journeyd's queue and API against the framework it is built on.

Measured in one run, on one machine, for each durability mode side by side (`full`, the default:
synchronous=FULL and fsynced images; `fast`: synchronous=NORMAL, no fsync):
  * tasks/s through submit -> success with an engine that does no work (the queue, the store,
    image writes and the HTTP layer are all that is left), and the time from submit to a worker
    starting (p50/p99), on an idle queue and under that load; on the idle queue also the submit
    request's own round trip, which waits for its commit;
  * GET /v1/midjourney/{id} requests/s against a bare FastAPI endpoint returning a task-shaped
    dict on the same uvicorn settings (the framework's ceiling), as a ratio: for a finished task
    (served from memory: a terminal row never changes) and for an unfinished one (one SQLite read
    per request).

Each server is its own uvicorn process with its data dir on the same filesystem; the load comes
from `wrk` (Debian package) for fetches and from an httpx client for submits. Results go to
bench/results/control_plane-<time>.json.

    python bench/control_plane.py            # full run
    python bench/control_plane.py --quick    # smaller numbers, for a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from common import cpu_name  # bench/common.py: this script's own folder is on the path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGET_FETCH_RATIO = 0.60
TARGET_START_P50_MS = 20.0
MODES = ("full", "fast")  # JOURNEYD_DURABILITY
KINDS = ("finished", "unfinished")  # the task a fetch reads


# --- the two servers ---------------------------------------------------------------------------------
class NoopEngine:
    """An engine that does no work: four 8x8 black images, at once."""

    name = "noop"

    def check(self, prompt) -> None:  # type: ignore[no-untyped-def]
        pass

    def canvas_size(self, prompt) -> tuple[int, int]:  # type: ignore[no-untyped-def]
        return 8, 8

    def generate(self, prompt, size, seeds, progress, init_images=()):  # type: ignore[no-untyped-def]
        return [np.zeros((8, 8, 3), np.uint8) for _ in seeds]

    def vary(self, image, prompt, strength, seeds, progress):  # type: ignore[no-untyped-def]
        return [image for _ in seeds]

    def upscale(self, image, prompt, mode, seed, progress):  # type: ignore[no-untyped-def]
        return image

    def inpaint(self, image, mask, prompt, seeds, kind, progress):  # type: ignore[no-untyped-def]
        return [image for _ in seeds]


def serve_journeyd(port: int, data_dir: str, durability: str) -> None:
    import uvicorn

    from journeyd.api.app import create_app
    from journeyd.config import Settings
    from journeyd.runtime import build_runtime

    settings = Settings(data_dir=Path(data_dir), port=port, max_queued_per_key=0, durability=durability)
    uvicorn.run(
        create_app(build_runtime(settings, engine=NoopEngine())),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


def serve_bare(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    task = {
        "id": "task_01KV52C0TEJSYZMCG0NCS4YWKK",
        "status": "SUCCESS",
        "action": "IMAGINE",
        "progress": "100%",
        "grid_image_url": "http://127.0.0.1/images/x/grid.png",
        "image_urls": [f"http://127.0.0.1/images/x/{i}.png" for i in range(4)],
        "buttons": [
            {"customId": f"MJ::JOB::upsample::{i}::3785da15-4f70-4034-9128-f3ff1ac634fa", "label": f"U{i}"}
            for i in range(1, 5)
        ],
        "prompt": "a beautiful sunset over mountains",
        "fail_reason": None,
    }

    @app.get("/v1/midjourney/{task_id}")
    async def fetch(task_id: str) -> dict[str, Any]:
        return task

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_up(url: str) -> None:
    for _ in range(300):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not start")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- measurements ------------------------------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _task_times(db: Path, ids: list[str]) -> list[tuple[int, int, int]]:
    with sqlite3.connect(db) as conn:
        marks = ",".join("?" * len(ids))
        return conn.execute(
            f"SELECT created_at, started_at, finished_at FROM tasks WHERE id IN ({marks})",
            [i.removeprefix("task_") for i in ids],
        ).fetchall()


def idle_latency(base: str, db: Path, samples: int) -> dict[str, float]:
    """One task at a time on an idle queue: the submit's round trip, submit -> worker start, -> success."""
    ids, submits = [], []
    with httpx.Client(base_url=base, timeout=30) as client:
        for i in range(samples):
            sent = time.perf_counter()
            answer = client.post("/v1/midjourney/generations", json={"prompt": f"idle {i}"})
            submits.append((time.perf_counter() - sent) * 1000)
            task_id = answer.json()["data"][0]["task_id"]
            while client.get(f"/v1/midjourney/{task_id}").json()["status"] != "SUCCESS":
                time.sleep(0.002)
            ids.append(task_id)
    times = _task_times(db, ids)
    start = [float(s - c) for c, s, _ in times]
    done = [float(f - c) for c, _, f in times]
    return {
        "samples": samples,
        "submit_request_p50_ms": _percentile(submits, 50),
        "submit_request_p99_ms": _percentile(submits, 99),
        "submit_to_start_p50_ms": _percentile(start, 50),
        "submit_to_start_p99_ms": _percentile(start, 99),
        "submit_to_success_p50_ms": _percentile(done, 50),
    }


async def _submit_all(base: str, count: int, concurrency: int) -> list[str]:
    ids: list[str] = []
    queue = iter(range(count))
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def submitter() -> None:
            for i in queue:
                answer = await client.post("/v1/midjourney/generations", json={"prompt": f"load {i}"})
                ids.append(answer.json()["data"][0]["task_id"])

        await asyncio.gather(*(submitter() for _ in range(concurrency)))
    return ids


def throughput(base: str, db: Path, count: int, concurrency: int) -> dict[str, float]:
    """Submit `count` tasks as fast as the API takes them; tasks/s from first submit to last success."""
    ids = asyncio.run(_submit_all(base, count, concurrency))
    deadline = time.monotonic() + 600
    with sqlite3.connect(db) as conn:
        while (
            conn.execute(
                "SELECT COUNT(*) FROM tasks WHERE status = 'success' AND id IN ({})".format(",".join("?" * len(ids))),
                [i.removeprefix("task_") for i in ids],
            ).fetchone()[0]
            < count
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("tasks did not finish")
            time.sleep(0.05)
    times = _task_times(db, ids)
    first, last = min(c for c, _, _ in times), max(f for _, _, f in times)
    start = [float(s - c) for c, s, _ in times]
    return {
        "tasks": count,
        "submit_concurrency": concurrency,
        "tasks_per_s": count / ((last - first) / 1000),
        "submit_to_start_p50_ms_under_load": _percentile(start, 50),
        "submit_to_start_p99_ms_under_load": _percentile(start, 99),
    }


def _fetch_targets(base: str) -> tuple[str, str]:
    """A finished task (its row is immutable, so journeyd serves it from memory) and an unfinished
    one, a Vary (Region) task waiting in MODAL (read from SQLite on every request)."""
    with httpx.Client(base_url=base) as client:

        def done(path: str, body: dict[str, Any]) -> str:
            task_id = client.post(path, json=body).json()["data"][0]["task_id"]
            while client.get(f"/v1/midjourney/{task_id}").json()["status"] != "SUCCESS":
                time.sleep(0.01)
            return task_id

        grid = done("/v1/midjourney/generations", {"prompt": "fetched"})
        upscaled = done("/v1/midjourney/generations/upscale", {"task_id": grid, "index": 1})
        waiting = client.post("/v1/midjourney/generations/inpaint", json={"task_id": upscaled}).json()
    return grid, waiting["data"][0]["task_id"]


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "requests_per_s": rps,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "latency_p50_ms": float(p50.group(1)) * scale[p50.group(2)] if p50 else float("nan"),
    }


def _median_run(runs: list[dict[str, float]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda run: run["requests_per_s"])
    return {**ordered[len(ordered) // 2], "all_requests_per_s": [run["requests_per_s"] for run in runs]}


def _filesystem(path: Path) -> str:
    """The filesystem type and device a path lives on (from /proc/mounts), since fsync costs differ."""
    best = ("", "unknown", "unknown")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            device, point, kind = line.split()[:3]
            if str(path.resolve()).startswith(point.rstrip("/") + "/") and len(point) > len(best[0]):
                best = (point, kind, device)
    return f"{best[1]} on {best[2]}"


def _device() -> dict[str, Any]:
    cpu = cpu_name()
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(), "os": platform.platform(), "gpu": None}


def _versions() -> dict[str, str]:
    names = ["journeyd", "fastapi", "starlette", "uvicorn", "pydantic", "httptools", "uvloop", "numpy", "pillow"]
    found = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    found["wrk"] = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split()[1]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-journeyd", nargs=3, metavar=("PORT", "DATA_DIR", "DURABILITY"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating wrk rounds per server; the median counts")
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke test")
    args = parser.parse_args()
    if args.serve_journeyd:
        serve_journeyd(int(args.serve_journeyd[0]), args.serve_journeyd[1], args.serve_journeyd[2])
        return 0
    if args.serve_bare:
        serve_bare(int(args.serve_bare))
        return 0
    if args.quick:
        args.tasks, args.latency_samples, args.seconds, args.rounds = 100, 30, 2, 1
    if shutil.which("wrk") is None:
        print("this benchmark needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2

    root = Path(tempfile.mkdtemp(prefix="journeyd-bench-"))
    data = {mode: root / mode for mode in MODES}
    ports = {mode: _free_port() for mode in MODES}
    bare_port = _free_port()
    servers = [_spawn("--serve-journeyd", str(ports[mode]), str(data[mode]), mode) for mode in MODES]
    servers.append(_spawn("--serve-bare", str(bare_port)))
    jd = {mode: f"http://127.0.0.1:{ports[mode]}" for mode in MODES}
    bare = f"http://127.0.0.1:{bare_port}"
    try:
        for mode in MODES:
            _wait_up(f"{jd[mode]}/healthz")
        _wait_up(f"{bare}/v1/midjourney/x")
        db = {mode: data[mode] / "journeyd.sqlite3" for mode in MODES}
        latency = {mode: idle_latency(jd[mode], db[mode], args.latency_samples) for mode in MODES}
        load = {mode: throughput(jd[mode], db[mode], args.tasks, concurrency=16) for mode in MODES}
        urls = {}
        for mode in MODES:
            finished, waiting = _fetch_targets(jd[mode])
            urls[f"journeyd_{mode}_finished"] = f"{jd[mode]}/v1/midjourney/{finished}"
            urls[f"journeyd_{mode}_unfinished"] = f"{jd[mode]}/v1/midjourney/{waiting}"
        urls["bare_fastapi"] = f"{bare}/v1/midjourney/{finished}"
        for url in urls.values():
            wrk(url, 1, args.connections)  # warm up
        rounds = [  # alternate the servers, so a noisy moment does not favour either
            {name: wrk(url, args.seconds, args.connections) for name, url in urls.items()} for _ in range(args.rounds)
        ]
        fetch = {name: _median_run([run[name] for run in rounds]) for name in urls}
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
        filesystem = _filesystem(root)
        shutil.rmtree(root, ignore_errors=True)

    ceiling = fetch["bare_fastapi"]["requests_per_s"]
    modes = {}
    for mode in MODES:
        ratios = {kind: fetch[f"journeyd_{mode}_{kind}"]["requests_per_s"] / ceiling for kind in KINDS}
        modes[mode] = {
            "idle_queue": latency[mode],
            "throughput": load[mode],
            "fetch": {kind: fetch[f"journeyd_{mode}_{kind}"] for kind in KINDS},
            "fetch_ratio_to_bare": ratios,
            "targets": {
                "fetch_ratio_at_least": TARGET_FETCH_RATIO,
                "fetch_ratio_met_finished": ratios["finished"] >= TARGET_FETCH_RATIO,
                "fetch_ratio_met_unfinished": ratios["unfinished"] >= TARGET_FETCH_RATIO,
                "submit_to_start_p50_ms_below": TARGET_START_P50_MS,
                "submit_to_start_met": latency[mode]["submit_to_start_p50_ms"] < TARGET_START_P50_MS,
            },
        }
    cost = {  # what `full` costs against `fast`: > 1 means slower
        "submit_request_p50_ratio": latency["full"]["submit_request_p50_ms"] / latency["fast"]["submit_request_p50_ms"],
        "submit_to_success_p50_ms_added": latency["full"]["submit_to_success_p50_ms"]
        - latency["fast"]["submit_to_success_p50_ms"],
        "tasks_per_s_ratio": load["fast"]["tasks_per_s"] / load["full"]["tasks_per_s"],
    }
    report = {
        "benchmark": "control_plane",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": _device(),
        "versions": _versions(),
        "settings": {
            "journeyd_workers": 1,
            "engine": "noop (no work)",
            "wrk_connections": args.connections,
            "wrk_seconds": args.seconds,
            "wrk_rounds": args.rounds,
            "store": "SQLite WAL",
            "durability_modes": list(MODES),
            "data_dir_filesystem": filesystem,
            "dispatch": "local threads",
            "timestamps": "task rows, 1 ms resolution",
        },
        "modes": modes,
        "bare_fastapi": fetch["bare_fastapi"],
        "durability_cost": cost,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"control_plane-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("modes", "bare_fastapi", "durability_cost")}, indent=2))
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
