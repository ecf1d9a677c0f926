"""Prometheus metrics: every family journeyd exports, and the small functions that move them.

A leaf module: callers pass plain strings, so it depends on nothing above it. With
`PROMETHEUS_MULTIPROC_DIR` set (before the process starts), prometheus_client keeps each
process's values in files there and a scrape sums them, so any process can answer `/metrics`
for all of them (see `exposition`).

Label values come from short closed sets (actions, speeds, statuses, route templates, engine
names), never from requests, so the number of series cannot grow with traffic.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

log = logging.getLogger("journeyd.metrics")
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "unmatched"  # the route label of a path no route matches
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Image tasks take from a fraction of a second (an upscale pick) to many minutes (a large grid
# queued behind others on a busy GPU).
TASK_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
HTTP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

TASKS_SUBMITTED = Counter("journeyd_tasks_submitted", "Tasks created, by action and speed", ["action", "speed"])
TASKS_FINISHED = Counter(
    "journeyd_tasks_finished",
    "Tasks that ended (success, failure or cancelled), by action, speed and final status",
    ["action", "speed", "status"],
)
QUEUE_WAIT = Histogram(
    "journeyd_task_queue_wait_seconds",
    "Time a task waited in the queue before a worker took it (a requeued task waits again)",
    ["action"],
    buckets=TASK_BUCKETS_S,
)
RUN_TIME = Histogram(
    "journeyd_task_run_seconds",
    "Time from a task's start to its end, for tasks that ended after they started",
    ["action"],
    buckets=TASK_BUCKETS_S,
)
ENGINE_STEPS = Counter(
    "journeyd_engine_steps",
    "Denoising steps the engine reported done, per task (rate() is steps per second)",
    ["engine"],
)
WEBHOOK_DELIVERIES = Counter(
    "journeyd_webhook_deliveries",
    "Webhook delivery attempts by outcome: delivered, retry, failed (for good) or superseded",
    ["outcome"],
)
LEASES_RECLAIMED = Counter(
    "journeyd_leases_reclaimed",
    "Running tasks whose worker went silent: requeued, or failed after their last attempt",
    ["outcome"],
)
HTTP_REQUESTS = Counter(
    "journeyd_http_requests", "HTTP requests by route template, method and status", ["route", "method", "status"]
)
HTTP_DURATION = Histogram(
    "journeyd_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by route template and method",
    ["route", "method"],
    buckets=HTTP_BUCKETS_S,
)
# livesum: the requests being answered right now by the processes that are alive
HTTP_IN_FLIGHT = Gauge(
    "journeyd_http_requests_in_flight", "HTTP requests being answered now", multiprocess_mode="livesum"
)

# Bound children, so the per-request and per-step paths skip prometheus_client's label lookup.
_http_children: dict[tuple[str, str, int], tuple[Callable[[], None], Callable[[float], None]]] = {}
_step_children: dict[str, Callable[[float], None]] = {}


def task_submitted(action: str, speed: str) -> None:
    TASKS_SUBMITTED.labels(action, speed).inc()


def task_finished(action: str, speed: str, status: str) -> None:
    TASKS_FINISHED.labels(action, speed, status).inc()


def queue_wait(action: str, seconds: float) -> None:
    QUEUE_WAIT.labels(action).observe(max(0.0, seconds))


def run_time(action: str, seconds: float) -> None:
    RUN_TIME.labels(action).observe(max(0.0, seconds))


def engine_steps(engine: str, steps: int) -> None:
    inc = _step_children.get(engine)
    if inc is None:
        inc = _step_children[engine] = ENGINE_STEPS.labels(engine).inc
    inc(steps)


def webhook_delivery(outcome: str) -> None:
    WEBHOOK_DELIVERIES.labels(outcome).inc()


def leases_reclaimed(requeued: int, failed: int) -> None:
    if requeued:
        LEASES_RECLAIMED.labels("requeued").inc(requeued)
    if failed:
        LEASES_RECLAIMED.labels("failed").inc(failed)


def http_request(route: str, method: str, status: int, seconds: float) -> None:
    method = method if method in METHODS else "other"
    key = (route, method, status)
    children = _http_children.get(key)
    if children is None:
        children = _http_children[key] = (
            HTTP_REQUESTS.labels(route, method, str(status)).inc,
            HTTP_DURATION.labels(route, method).observe,
        )
    count, observe = children
    count()
    observe(seconds)


# --- queue depth: read from the store at scrape time -------------------------------------------
QueueCounts = Callable[[], Mapping[tuple[str, str], int]]  # (speed, status) -> tasks


class QueueDepth:
    """`journeyd_queue_depth{speed, status}`: tasks waiting (submitted) or running (in_progress).

    Read from the store when scraped, so every process answers with the same, current numbers.
    """

    def __init__(self, counts: QueueCounts, speeds: Iterable[str], statuses: Iterable[str]) -> None:
        self.counts, self.speeds, self.statuses = counts, tuple(speeds), tuple(statuses)

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self.counts()
        except Exception:  # the store is unreadable: the other metrics still matter, the more so now
            log.exception("could not read the queue depth")
            return
        family = GaugeMetricFamily(
            "journeyd_queue_depth",
            "Tasks queued (submitted) or running (in_progress), by speed",
            labels=["speed", "status"],
        )
        for speed in self.speeds:
            for status in self.statuses:
                family.add_metric([speed, status], counts.get((speed, status), 0))
        yield family


# --- exposition ------------------------------------------------------------------------------
def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR_ENV) or None


class _Scrape:
    """The collectors of one scrape, as the registry-like object `generate_latest` wants."""

    def __init__(self, *sources: object) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source.collect()  # type: ignore[attr-defined]


def exposition(*extra: object) -> tuple[bytes, str]:
    """The Prometheus text of every metric (summed over processes in multiprocess mode) and of
    `extra` collectors, with its content type."""
    path = multiprocess_dir()
    if path is None:
        base: object = REGISTRY
    else:
        from prometheus_client import multiprocess

        base = CollectorRegistry()
        multiprocess.MultiProcessCollector(base, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(_Scrape(base, *extra)), CONTENT_TYPE_LATEST  # type: ignore[arg-type]


class _MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the stdlib names it
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404, "only /metrics here")
            return
        body, content_type = exposition()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
        pass


def serve_metrics(host: str, port: int) -> ThreadingHTTPServer:
    """`/metrics` on its own small HTTP server, on a daemon thread: for processes with no API (a fleet
    worker), so a Prometheus on that box can scrape what only it knows (engine steps, its run times)."""
    server = ThreadingHTTPServer((host, port), _MetricsHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


def forget_dead_processes() -> list[int]:
    """Drop the live gauges of processes that are gone (a crashed worker's in-flight requests
    would otherwise count forever). Their counters stay: they are history, and still sum."""
    path = multiprocess_dir()
    if path is None:
        return []
    from prometheus_client import multiprocess

    dead = []
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = int(name.rsplit("_", 1)[1].removesuffix(".db"))
        if pid != os.getpid() and not _alive(pid):
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
            dead.append(pid)
    return sorted(set(dead))


def process_exiting() -> None:
    """This process ends: its live gauges should not outlive it."""
    path = multiprocess_dir()
    if path is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
