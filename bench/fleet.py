"""Fleet benchmark: journeyd's fleet mode (PostgreSQL, Celery over RabbitMQ, S3) on this machine.

Measured in one run, with real processes (the same harness as tests/test_fleet.py):
  * scaling: an engine that takes a fixed time per task and leaves the CPU to the fleet, as a GPU
    does (`--engine paced`: each Imagine waits JOURNEYD_PACED_TASK_MS in 10 steps and draws four flat
    64 px pictures, which the worker saves to S3 as it would any), 1, 2, 4 and 8 worker processes, N
    tasks each time; tasks/s against the ideal line (workers x 1 / task time). Target: 90% of linear
    at 8 workers. Also recorded: the CPU each part of the fleet spent per task, from /proc.
  * submit-to-start latency with idle workers (p50, p99): Celery fleet against the embedded server
    (SQLite, worker threads) with the same engine. Target: p50 under 50 ms on Celery.
  * GET /v1/midjourney/{id} through an API node on PostgreSQL against the embedded SQLite server,
    with wrk, for a finished and an unfinished (MODAL) task. Target: 60% or more.

Results go to bench/results/fleet-<time>.json with the device, versions and the exact command.

    python bench/fleet.py            # full run (about 5 minutes)
    python bench/fleet.py --quick    # smaller numbers, for a smoke test
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.conninfo import conninfo_to_dict

from common import write_report  # bench/common.py: this script's own folder is on the path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.fleet import Fleet  # noqa: E402
from tests.pg import fresh_database  # noqa: E402
from tests.seaweed import Seaweed  # noqa: E402
from tests.servers import Server  # noqa: E402

TARGET_LINEAR = 0.90
TARGET_START_P50_MS = 50.0
TARGET_FETCH_RATIO = 0.60


def _url(dsn: str) -> str:
    parts = conninfo_to_dict(dsn)
    return f"postgresql://{parts.get('user', 'postgres')}@{parts['host']}:{parts.get('port', 5432)}/{parts['dbname']}"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _rows(url: str, ids: list[str]) -> list[tuple[str, int, int | None, int | None]]:
    with psycopg.connect(url) as db:
        return db.execute(
            "SELECT status, created_at, started_at, finished_at FROM tasks WHERE id = ANY(%s)",
            ([i.removeprefix("task_") for i in ids],),
        ).fetchall()


def _submit(base: str, prompts: list[str], concurrency: int = 16) -> list[str]:
    with httpx.Client(base_url=base, timeout=60) as client, ThreadPoolExecutor(concurrency) as pool:

        def one(prompt: str) -> str:
            answer = client.post("/v1/midjourney/generations", json={"prompt": prompt})
            answer.raise_for_status()
            return answer.json()["data"][0]["task_id"]

        return list(pool.map(one, prompts))


def _wait_all(url: str, ids: list[str], timeout_s: float) -> list[tuple[str, int, int | None, int | None]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = _rows(url, ids)
        if len(rows) == len(ids) and all(status == "success" for status, *_ in rows):
            return rows
        time.sleep(0.2)
    raise RuntimeError(f"tasks did not all succeed in {timeout_s} s: {sorted({r[0] for r in _rows(url, ids)})}")


def _fleet(root: Path, url: str, s3: Seaweed, **settings: Any) -> Fleet:
    return Fleet(root, database_url=url, s3_env=s3.env, storage_url=f"s3://{s3.bucket}/bench", **settings)


def scaling(root: Path, counts: list[int], tasks: int, task_s: float) -> list[dict[str, Any]]:
    results = []
    for count in counts:
        with fresh_database() as dsn, tempfile.TemporaryDirectory(dir=root) as scratch:
            s3 = Seaweed(Path(scratch) / "s3").start()
            fleet = _fleet(
                Path(scratch), _url(dsn), s3, classic_size=64, paced_task_ms=round(task_s * 1000), max_queued_per_key=0
            )
            try:
                api = fleet.api()
                for _ in range(count):
                    fleet.worker(("--engine", "paced"))
                before, busy_before = cpu_seconds(), _cpu_ticks()
                ids = _submit(api.url, [f"a harbour {i}" for i in range(tasks)])
                rows = _wait_all(_url(dsn), ids, timeout_s=tasks * task_s * 3 + 60)
                busy = _busy(busy_before, _cpu_ticks())
                spent = {part: round((cpu_seconds()[part] - before.get(part, 0.0)) / tasks * 1000, 1) for part in PARTS}
            finally:
                fleet.stop()
                s3.stop()
        first = min(started for _, _, started, _ in rows if started is not None)
        last = max(finished for *_, finished in rows if finished is not None)
        rate = tasks / ((last - first) / 1000)
        # the middle half of the finishes: the fleet at full stride, without the submits' burst at the start
        ends = sorted(finished for *_, finished in rows if finished is not None)
        steady = (len(ends) // 2) / ((ends[3 * len(ends) // 4] - ends[len(ends) // 4]) / 1000)
        runs = [finished - started for _, _, started, finished in rows if started is not None and finished is not None]
        ideal = count / task_s
        results.append({"workers": count, "tasks": tasks, "tasks_per_s": round(rate, 2), "ideal": round(ideal, 2)})
        results[-1]["of_linear"] = round(rate / ideal, 3)
        results[-1]["steady_of_linear"] = round(steady / ideal, 3)
        # a task's run, claim to finish: the engine's fixed time, then its images saved and its end committed
        results[-1]["run_ms"] = {"p50": _percentile(runs, 0.5), "p90": _percentile(runs, 0.9), "engine": task_s * 1000}
        results[-1]["machine_busy"] = round(busy, 3)
        results[-1]["cpu_ms_per_task"] = spent
        print(f"scaling: {results[-1]}", flush=True)
    return results


PARTS = {  # a process's part of the fleet, by what its command line holds
    "workers": "journeyd worker",
    "api_node": "journeyd serve",
    "postgresql": "postgres",
    "rabbitmq": "beam.smp",
    "seaweedfs": "weed",
}


def cpu_seconds() -> dict[str, float]:
    """CPU time (user + system) every running process of each part has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    used = dict.fromkeys(PARTS, 0.0)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        for part, marker in PARTS.items():
            if marker in command:
                used[part] += (int(fields[11]) + int(fields[12])) / tick
                break
    return used


def _cpu_ticks() -> list[int]:
    return [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def _busy(before: list[int], after: list[int]) -> float:
    """The share of the machine's CPU time that was not idle between two `_cpu_ticks()`."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    return 1 - (spent[3] + spent[4]) / sum(spent)  # idle and iowait


def _latency(base: str, url_or_db: str, samples: int) -> dict[str, float]:
    """Submit one task at a time on idle workers; the time from its commit to a worker starting it."""
    waits = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for i in range(samples):
            answer = client.post("/v1/midjourney/generations", json={"prompt": f"a quiet bay {i}"})
            task_id = answer.json()["data"][0]["task_id"]
            while client.get(f"/v1/midjourney/{task_id}").json()["status"] != "SUCCESS":
                time.sleep(0.01)
            created, started = _times(url_or_db, task_id)
            waits.append(float(started - created))
    return {"p50_ms": _percentile(waits, 0.5), "p99_ms": _percentile(waits, 0.99), "samples": samples}


def _times(url_or_db: str, task_id: str) -> tuple[int, int]:
    bare = task_id.removeprefix("task_")
    if url_or_db.startswith("postgresql://"):
        with psycopg.connect(url_or_db) as db:
            row = db.execute("SELECT created_at, started_at FROM tasks WHERE id = %s", (bare,)).fetchone()
    else:
        import sqlite3

        with sqlite3.connect(url_or_db) as db:
            row = db.execute("SELECT created_at, started_at FROM tasks WHERE id = ?", (bare,)).fetchone()
    assert row is not None
    return row[0], row[1]


def wrk(url: str, seconds: int, connections: int) -> float:
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url], capture_output=True, text=True, check=True
    ).stdout
    return float(next(line for line in output.splitlines() if line.startswith("Requests/sec:")).split()[1])


def _targets(base: str) -> dict[str, str]:
    """A finished task and an unfinished one (a MODAL task: it never changes) on this server."""
    with httpx.Client(base_url=base, timeout=60) as client:
        done = client.post("/v1/midjourney/generations", json={"prompt": "a lighthouse"}).json()["data"][0]["task_id"]
        while (task := client.get(f"/v1/midjourney/{done}").json())["status"] != "SUCCESS":
            time.sleep(0.05)
        upscale = client.post("/v1/midjourney/generations/upscale", json={"task_id": done, "index": 1})
        upscaled = upscale.json()["data"][0]["task_id"]
        while client.get(f"/v1/midjourney/{upscaled}").json()["status"] != "SUCCESS":
            time.sleep(0.05)
        modal = client.post("/v1/midjourney/generations/inpaint", json={"task_id": upscaled}).json()["data"][0]
        assert task["status"] == "SUCCESS"
    return {"finished": f"{base}/v1/midjourney/{done}", "unfinished": f"{base}/v1/midjourney/{modal['task_id']}"}


def against_embedded(root: Path, samples: int, seconds: int, rounds: int, connections: int) -> dict[str, Any]:
    with fresh_database() as dsn, tempfile.TemporaryDirectory(dir=root) as scratch:
        s3 = Seaweed(Path(scratch) / "s3").start()
        fleet = _fleet(Path(scratch), _url(dsn), s3, classic_size=64, max_queued_per_key=0)
        embedded = Server(
            Path(scratch) / "embedded", env={"JOURNEYD_CLASSIC_SIZE": "64", "JOURNEYD_MAX_QUEUED_PER_KEY": "0"}
        )
        try:
            api = fleet.api()
            fleet.worker(), fleet.worker()
            embedded.start()
            latency = {
                "celery": _latency(api.url, _url(dsn), samples),
                "embedded": _latency(embedded.url, str(embedded.data_dir / "journeyd.sqlite3"), samples),
            }
            print(f"submit to start: {latency}", flush=True)
            urls = {"postgres_api_node": _targets(api.url), "embedded_sqlite": _targets(embedded.url)}
            fetch: dict[str, dict[str, list[float]]] = {name: {"finished": [], "unfinished": []} for name in urls}
            for pair in urls.values():
                wrk(pair["finished"], 1, connections)  # warm up
            for _ in range(rounds):  # A B A B: the two servers alternate, so drift hits both
                for name, pair in urls.items():
                    for kind, url in pair.items():
                        fetch[name][kind].append(wrk(url, seconds, connections))
        finally:
            embedded.stop()
            fleet.stop()
            s3.stop()
    medians = {name: {kind: sorted(v)[len(v) // 2] for kind, v in kinds.items()} for name, kinds in fetch.items()}
    ratios = {
        kind: medians["postgres_api_node"][kind] / medians["embedded_sqlite"][kind]
        for kind in medians["embedded_sqlite"]
    }
    print(f"fetch requests/s: {medians}, ratio {ratios}", flush=True)
    return {"submit_to_start": latency, "fetch_rps": fetch, "fetch_median_rps": medians, "fetch_ratio": ratios}


def _versions() -> dict[str, str]:
    found = {name: metadata.version(name) for name in ("journeyd", "celery", "kombu", "psycopg", "boto3", "fastapi")}
    found["python"] = platform.python_version()
    found["postgresql"] = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    found["rabbitmq"] = subprocess.run(
        ["rabbitmqctl", "-q", "version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    found["wrk"] = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split()[1]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--task-ms", type=float, default=200)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--samples", type=int, default=100, help="submit-to-start samples per server")
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.workers, args.samples, args.seconds, args.rounds = 40, "1,2", 20, 2, 1
    with tempfile.TemporaryDirectory(prefix="journeyd-fleet-bench-") as root:
        counts = [int(n) for n in args.workers.split(",")]
        scale = scaling(Path(root), counts, args.tasks, args.task_ms / 1000)
        compared = against_embedded(Path(root), args.samples, args.seconds, args.rounds, args.connections)
    at_most = max(scale, key=lambda row: row["workers"])
    write_report(
        "fleet",
        {
            "machine": platform.machine(),
            "versions": _versions(),
            "settings": vars(args),
            "scaling": scale,
            **compared,
            "targets": {
                "of_linear_at_most_workers": {"target": TARGET_LINEAR, "measured": at_most["of_linear"]},
                "celery_start_p50_ms": {
                    "target": TARGET_START_P50_MS,
                    "measured": compared["submit_to_start"]["celery"]["p50_ms"],
                },
                "fetch_ratio": {"target": TARGET_FETCH_RATIO, "measured": compared["fetch_ratio"]},
            },
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
