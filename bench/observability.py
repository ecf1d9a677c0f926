"""What observability costs on the hot path: GET /v1/midjourney/{id} of a finished task, side by side.

Four journeyd servers in one run, each its own uvicorn process with the no-work engine, polled by
`wrk` in alternating rounds; what counts is each server process's CPU time per request (from
/proc), which other load on the machine disturbs far less than requests per second:
  * none:    the app without the request middleware (no request id, metrics or request log line);
  * metrics: the middleware with logging above INFO (request id, HTTP metrics; no line written);
  * text:    as `journeyd serve` runs by default: one text line per request, to a file;
  * json:    the same with `--log-format json`.
A finished task is served from memory, so this is the request path with the least other work: the
worst case for the overhead's share.

Then, in this process, the store's CPU time per task (insert, claim, finish) with no observer, with
the task observer (metrics) and with its log lines too, and the claim as it was before it read
the queued row first (one UPDATE) against the claim now. Results go to
bench/results/observability-<time>.json.

    python bench/observability.py            # full run
    python bench/observability.py --quick    # smaller numbers, for a smoke test
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from common import write_report  # bench/common.py: this script's own folder is on the path
from control_plane import NoopEngine, _free_port, _wait_up
from journeyd.domain.lifecycle import Action, Op, Speed, Status
from journeyd.domain.prompt import parse_prompt
from journeyd.domain.task import Task
from journeyd.store.sqlite import _CLAIM, _TASK_COLUMNS, SqliteStore, _task_from_row

VARIANTS = ("none", "metrics", "text", "json")


def serve(variant: str, port: int, data_dir: str) -> None:
    import uvicorn

    from journeyd import logs
    from journeyd.api.app import create_app
    from journeyd.api.observability import RequestLog
    from journeyd.config import Settings
    from journeyd.runtime import build_runtime

    logs.configure("json" if variant == "json" else "text", "info" if variant in ("text", "json") else "warning")
    app = create_app(build_runtime(Settings(data_dir=Path(data_dir), port=port), engine=NoopEngine()))
    if variant == "none":
        app.user_middleware = [m for m in app.user_middleware if m.cls is not RequestLog]
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", log_config=None, access_log=False)


def _finished_task(base: str) -> str:
    with httpx.Client(base_url=base, timeout=30) as client:
        task_id = client.post("/v1/midjourney/generations", json={"prompt": "polled"}).json()["data"][0]["task_id"]
        while client.get(f"/v1/midjourney/{task_id}").json()["status"] != "SUCCESS":
            time.sleep(0.01)
    return task_id


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def poll(url: str, pid: int, seconds: int, connections: int) -> dict[str, float]:
    """wrk against `url`: requests/s, and the server's CPU microseconds per request."""
    before = _cpu_s(pid)
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url], capture_output=True, text=True, check=True
    ).stdout
    cpu_s = _cpu_s(pid) - before
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests": requests,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        "cpu_us_per_request": round(cpu_s * 1e6 / requests, 1),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


class _OneStatementClaim(SqliteStore):
    """The claim as it was before it learnt when the task was queued: one UPDATE, announcing nothing."""

    def claim_next(self, worker: str, now: int, lease_ms: int) -> Task | None:
        with self._write() as conn:
            row = conn.execute(
                f"UPDATE tasks SET {_CLAIM} WHERE seq = "
                "(SELECT seq FROM tasks WHERE status = 'submitted' ORDER BY priority DESC, seq LIMIT 1) "
                f"RETURNING {_TASK_COLUMNS}",
                {"now": now, "worker": worker, "until": now + lease_ms},
            ).fetchone()
            if row is None:
                return None
            self._emit(conn, row["id"], now)
            return _task_from_row(row)


def _task(number: int, now: int) -> Task:
    spec = parse_prompt("a pond")
    return Task(
        id=f"T{number:025d}",
        owner=None,
        action=Action.IMAGINE,
        op=Op.GENERATE,
        status=Status.SUBMITTED,
        prompt="a pond",
        spec=spec,
        speed=Speed.FAST,
        seed=1,
        price_name="imagine",
        created_at=now,
        updated_at=now,
        number=number,
    )


def store_costs(root: Path, tasks: int, rounds: int) -> dict[str, dict[str, float]]:
    """CPU microseconds per task through the store, per variant (the median of `rounds`)."""
    from journeyd import logs, observe

    variants: dict[str, tuple[type[SqliteStore], Any, str]] = {
        "no observer": (SqliteStore, None, "warning"),
        "observer (metrics)": (SqliteStore, observe.task_moved, "warning"),
        "observer (metrics and text lines)": (SqliteStore, observe.task_moved, "info"),
    }
    claims = {"one statement (before)": _OneStatementClaim, "select, then update (now)": SqliteStore}
    lifecycle: dict[str, list[float]] = {name: [] for name in variants}
    claim: dict[str, list[float]] = {name: [] for name in claims}
    for round_ in range(rounds):
        for name, (kind, observer, level) in variants.items():
            logs.configure("text", level)
            logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # noqa: SIM115
            store = kind(root / f"{round_}-{len(lifecycle[name])}-{name}.db", on_transition=observer)
            started = time.process_time()
            for i in range(tasks):
                store.insert_task(_task(i + 1, 1_000 + i))
                store.claim_next("w", 2_000 + i, 60_000)
                store.finish(f"T{i + 1:025d}", "w", Status.SUCCESS, 3_000 + i)
            lifecycle[name].append((time.process_time() - started) * 1e6 / tasks)
            store.close()
        for name, kind in claims.items():
            store = kind(root / f"{round_}-claim-{name}.db")
            for i in range(tasks):
                store.insert_task(_task(i + 1, 1_000 + i))
            started = time.process_time()
            while store.claim_next("w", 2_000, 60_000) is not None:
                pass
            claim[name].append((time.process_time() - started) * 1e6 / tasks)
            store.close()
    logs.configure("text", "warning")
    return {
        "cpu_us_per_task_lifecycle": {name: round(statistics.median(v), 1) for name, v in lifecycle.items()},
        "cpu_us_per_claim": {name: round(statistics.median(v), 1) for name, v in claim.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", nargs=3, metavar=("VARIANT", "PORT", "DATA_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="alternating wrk rounds per server; the median counts")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per store round")
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke test")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.serve[2])
        return 0
    if args.quick:
        args.seconds, args.rounds, args.tasks = 2, 1, 200
    if shutil.which("wrk") is None:
        print("this benchmark needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2

    root = Path(tempfile.mkdtemp(prefix="journeyd-bench-obs-"))
    servers: dict[str, subprocess.Popen[bytes]] = {}
    urls = {}
    try:
        for variant in VARIANTS:
            port, data = _free_port(), root / variant
            data.mkdir()
            with open(root / f"{variant}.log", "wb") as log:  # a file, as a real deployment's log is
                servers[variant] = subprocess.Popen(
                    [sys.executable, __file__, "--serve", variant, str(port), str(data)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            base = f"http://127.0.0.1:{port}"
            _wait_up(f"{base}/healthz")
            urls[variant] = f"{base}/v1/midjourney/{_finished_task(base)}"
        for name, url in urls.items():
            poll(url, servers[name].pid, 1, args.connections)  # warm up
        rounds = [  # alternate the servers, so a noisy moment does not favour one
            {name: poll(url, servers[name].pid, args.seconds, args.connections) for name, url in urls.items()}
            for _ in range(args.rounds)
        ]
        lines = {variant: len((root / f"{variant}.log").read_text().splitlines()) for variant in VARIANTS}
    finally:
        for server in servers.values():
            server.terminate()
            server.wait(10)
    try:
        store = store_costs(root, args.tasks, args.rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def median(name: str, measure: str) -> float:
        return float(statistics.median(run[name][measure] for run in rounds))

    cpu = {name: median(name, "cpu_us_per_request") for name in VARIANTS}
    rps = {name: median(name, "requests_per_s") for name in VARIANTS}
    write_report(
        "observability",
        {
            "settings": {"wrk_connections": args.connections, "wrk_seconds": args.seconds, "wrk_rounds": args.rounds},
            "cpu_us_per_request": cpu,
            "added_cpu_us_per_request": {name: round(cpu[name] - cpu["none"], 1) for name in VARIANTS},
            "requests_per_s": rps,
            "rounds": rounds,
            "log_lines_written": lines,
            "store": store,
        },
    )
    print({"cpu_us_per_request": cpu, "requests_per_s": rps, **store})
    return 0


if __name__ == "__main__":
    sys.exit(main())
