"""The `journeyd` command: serve, worker, migrate, keys, tasks, models, demo."""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.metadata
import io
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

from journeyd.adapters import BadUrl, open_store, safe_url
from journeyd.api.auth import is_loopback
from journeyd.clock import SystemClock
from journeyd.command_failed import CommandFailed
from journeyd.config import Settings
from journeyd.domain.errors import StorageUnavailable
from journeyd.domain.ids import IdGenerator
from journeyd.domain.keys import ApiKey, hash_secret, new_secret
from journeyd.media.storage import check_writable
from journeyd.models.commands import add_commands as add_model_commands
from journeyd.store.base import TaskStore, find_task


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in (
        "data_dir",
        "durability",
        "host",
        "port",
        "engine",
        "workers",
        "public_url",
        "prices",
        "model",
        "models",
        "model_family",
        "device",
        "dtype",
        "speedups",
        "log_format",
        "database_url",
        "broker_url",
        "storage_url",
        "worker_metrics",
    ):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "insecure", False):
        overrides["insecure"] = True
    return Settings(**overrides)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from journeyd import logs
    from journeyd.api.app import create_app
    from journeyd.api.connections import with_header_deadline
    from journeyd.engines import choose_engine
    from journeyd.runtime import build_runtime
    from journeyd.serving import RecordedServer

    settings = _settings(args)
    logs.configure(settings.log_format, args.log_level)
    store = _open_store(settings, create=True)
    keys = store.count_keys()
    store.close()
    if not keys and not is_loopback(settings.host) and not settings.insecure:
        print(
            f"journeyd: refusing to listen on {settings.host} with no API key: anyone on the network could use "
            "it.\n  create a key first:  journeyd keys create --credits 1000\n  or, if you mean it:  --insecure",
            file=sys.stderr,
        )
        return 2
    try:
        choice = choose_engine(settings)
        settings = choice.settings
        runtime = build_runtime(settings)
        runtime.lock.acquire()
    except (ValueError, OSError, RuntimeError) as error:  # a bad model, a busy data dir: say so and stop
        print(f"journeyd: {error}", file=sys.stderr)
        return 2
    copies = f" on {len(runtime.engines)} devices" if len(runtime.engines) > 1 else ""
    copies = copies if runtime.loaded else " (not loaded: API node, prompts checked against its settings)"
    work = (
        f"{len(runtime.workers)} worker(s)"
        if settings.broker_url is None
        else f"broker {safe_url(settings.broker_url)}"
    )
    model = f" ({settings.model or settings.models})" if settings.engine == "diffusers" else ""
    log = logging.getLogger("journeyd")
    log.info(
        "journeyd %s engine%s%s, %s, database %s, images %s, listening on %s",
        settings.engine,
        model,
        copies,
        work,
        safe_url(settings.database),
        settings.storage,
        settings.base_url,
    )
    if choice.note:
        log.info("%s", choice.note)
    # uvicorn's own lines go through our handler (log_config=None); its access log stays off: we log each request
    config = uvicorn.Config(
        create_app(runtime),
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        log_config=None,
        access_log=False,
        http=with_header_deadline(settings.read_timeout_s),
    )
    server = RecordedServer(config, settings)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it caught, once it has shut down
        server.run()
    return 0 if server.started else 1


def keys_create(args: argparse.Namespace) -> int:
    store = _open_store(_settings(args), create=True)
    secret = new_secret()
    key = ApiKey(
        id=IdGenerator(SystemClock().now_ms).new(),
        prefix=secret[:8],
        name=args.name or "",
        balance=args.credits,
        created_at=SystemClock().now_ms(),
    )
    store.create_key(key, hash_secret(secret))
    store.close()
    print(secret)
    print(f"key {key.id} with {key.balance} credits; shown once, stored only as a hash", file=sys.stderr)
    return 0


def _open_store(settings: Settings, *, create: bool = False) -> TaskStore:
    """The configured database, migrated; with `create`, the data dir is made if new and checked to be writable."""
    if create:
        check_writable(settings.data_dir, durable=settings.durable)
    return open_store(settings)


def migrate(args: argparse.Namespace) -> int:
    """Bring the database's schema up to date, alone (`serve` and `worker` also do it at start-up)."""
    settings = _settings(args)
    store = _open_store(settings, create=True)
    store.close()
    print(f"journeyd: {safe_url(settings.database)} is up to date", file=sys.stderr)
    return 0


def worker(args: argparse.Namespace) -> int:
    """A Celery worker process: loads its engine, then runs the tasks of the models it serves."""
    from journeyd import logs, metrics
    from journeyd.dispatch.celery import make_celery, run_worker
    from journeyd.roster import announce_interval
    from journeyd.runtime import build_workers

    settings = _settings(args)
    logs.configure(settings.log_format, args.log_level)
    if settings.broker_url is None:
        print("journeyd: a worker needs JOURNEYD_BROKER_URL (or --broker-url amqp://...)", file=sys.stderr)
        return 2
    try:
        store, _images, workers = build_workers(settings)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"journeyd: {error}", file=sys.stderr)
        return 2
    if settings.worker_metrics:
        host, _, port = settings.worker_metrics.rpartition(":")
        try:
            metrics.serve_metrics(host or "127.0.0.1", int(port))
        except (ValueError, OSError) as error:
            store.close()
            print(f"journeyd: cannot serve metrics at {settings.worker_metrics!r}: {error}", file=sys.stderr)
            return 2
    try:
        app = make_celery(settings.broker_url, namespace=settings.broker_namespace)
        return run_worker(
            app,
            workers,
            namespace=settings.broker_namespace,
            loglevel=args.log_level.upper(),
            announce_every_s=announce_interval(settings.unserved_s),
        )
    finally:
        store.close()


def keys_list(args: argparse.Namespace) -> int:
    store = _open_store(_settings(args))
    for key in store.list_keys():
        _print_key(key)
    store.close()
    return 0


def _print_key(key: ApiKey) -> None:
    state = "revoked" if key.revoked else "active"
    print(f"{key.id}  {key.prefix}…  {key.balance:>8} credits  {state}  {key.name}")


def keys_revoke(args: argparse.Namespace) -> int:
    return _change_key(args, lambda store, now: store.revoke_key(args.key_id, now))


def keys_credit(args: argparse.Namespace) -> int:
    return _change_key(args, lambda store, now: store.grant(args.key_id, args.credits, now))


def _change_key(args: argparse.Namespace, change: Callable[[TaskStore, int], ApiKey | None]) -> int:
    """Apply `change` to the key named on the command line (a running server sees it at its next request)."""
    store = _open_store(_settings(args))
    try:
        key = change(store, SystemClock().now_ms())
    finally:
        store.close()
    if key is None:
        print(f"journeyd: no key {args.key_id!r}; `journeyd keys list` shows their ids", file=sys.stderr)
        return 2
    _print_key(key)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of credits")
    return value


# --- tasks ------------------------------------------------------------------------------------------
def _image_base(settings: Settings) -> str:
    """Where image URLs hang from: the public URL, else the running server's address, else the configured one."""
    from journeyd.serving import read_record

    record = None if settings.public_url else read_record(settings.data_dir)
    return f"{record.url if record else settings.base_url}/images"


def tasks_list(args: argparse.Namespace) -> int:
    from journeyd.task_views import table

    store = _open_store(_settings(args))
    try:
        tasks = store.recent_tasks(statuses=args.status or (), limit=args.limit)
    finally:
        store.close()
    print(table(tasks) if tasks else "no tasks" + (" with that status" if args.status else ""))
    return 0


def tasks_show(args: argparse.Namespace) -> int:
    from journeyd.task_views import detail

    settings = _settings(args)
    store = _open_store(settings)
    try:
        task = find_task(store, args.task_id)
    finally:
        store.close()
    if task is None:
        raise CommandFailed(f"no task {args.task_id!r}; `journeyd tasks list` shows their ids")
    print(detail(task, _image_base(settings)))
    return 0


def _status(text: str) -> Any:
    from journeyd.task_views import status_named

    try:
        return status_named(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# --- demo -------------------------------------------------------------------------------------------
def _demo_mask(width: int, height: int) -> str:
    """A PNG data URL: black, with a white ellipse in the middle third (the region to repaint)."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).ellipse((width // 3, height // 3, 2 * width // 3, 2 * height // 3), fill=255)
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class StepProgress:
    """How far the step being waited on is, on stderr: one line rewritten in place on a terminal, a new
    line at each change otherwise (a log, a pipe)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.in_place = stream, stream.isatty()
        self.shown = ""

    def show(self, step: str, status: str, progress: str) -> None:
        line = f"{step:<12}{status} {progress}"
        if line == self.shown:
            return
        if self.in_place:
            self.stream.write("\r" + line.ljust(len(self.shown)))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.shown = line

    def clear(self) -> None:
        if self.in_place and self.shown:
            self.stream.write("\r" + " " * len(self.shown) + "\r")
            self.stream.flush()
        self.shown = ""


def _wait(client: Any, task_id: str, step: str, progress: StepProgress, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            task = client.get(f"/v1/midjourney/{task_id}").json()
            status = task.get("status")
            progress.show(step, str(status), str(task.get("progress", "")))
            if status in ("SUCCESS", "FAILURE", "CANCEL"):
                if status != "SUCCESS":
                    raise CommandFailed(f"demo: {step} (task {task_id}) ended {status}: {task.get('fail_reason')}")
                return task
            if time.monotonic() > deadline:
                raise CommandFailed(f"demo: {step} (task {task_id}) did not finish in {timeout_s:.0f} s")
            time.sleep(0.2)
    finally:
        progress.clear()


def _took(task: dict[str, Any]) -> str:
    """How long the task took on the server, from submit to finish."""
    return f"{(task['finish_time'] - task['submit_time']) / 1000:5.1f} s"


def run_demo_flow(
    client: Any, prompt: str, out: TextIO = sys.stdout, progress: StepProgress | None = None
) -> dict[str, Any]:
    """imagine -> U1 -> Vary (Region) -> modal with a drawn mask; a line per step with its time and URL
    on `out`, progress while each runs on stderr; returns the final task."""
    progress = progress or StepProgress(sys.stderr)

    def submit(path: str, body: dict[str, Any]) -> str:
        answer = client.post(path, json=body).json()
        if answer.get("code") != 200:
            raise CommandFailed(f"demo: {path} answered {answer}")
        return answer["data"][0]["task_id"]

    grid = _wait(client, submit("/v1/midjourney/generations", {"prompt": prompt}), "imagine", progress)
    print(f"imagine     {_took(grid)}  {grid['grid_image_url']}", file=out)
    upscale = {"task_id": grid["id"], "index": 1}
    upscaled = _wait(client, submit("/v1/midjourney/generations/upscale", upscale), "U1", progress)
    print(f"U1          {_took(upscaled)}  {upscaled['image_urls'][0]}", file=out)
    modal_id = submit("/v1/midjourney/generations/inpaint", {"task_id": upscaled["id"]})
    width, height = upscaled["properties"]["width"], upscaled["properties"]["height"]
    submit(
        "/v1/midjourney/generations/modal",
        {"task_id": modal_id, "prompt": "a glowing golden sun", "mask_url": _demo_mask(width, height)},
    )
    region = _wait(client, modal_id, "Vary Region", progress)
    print(f"Vary Region {_took(region)}  {region['grid_image_url']}", file=out)
    for i, url in enumerate(region["image_urls"], start=1):
        print(f"  candidate {i}  {url}", file=out)
    return region


def demo(args: argparse.Namespace) -> int:
    import httpx

    settings = _settings(args)
    url = _demo_url(args, settings)
    server = None if _answers(url) else _start_embedded(args, settings, url)
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            run_demo_flow(client, args.prompt)
    finally:
        if server is not None:
            server.stop()
    return 0


def _demo_url(args: argparse.Namespace, settings: Settings) -> str:
    """--url, else --port on this machine, else the server the data dir records, else the configured address."""
    from journeyd.serving import read_record

    if args.url:
        return args.url.rstrip("/")
    if args.port:
        return settings.local_url(args.port)
    record = read_record(settings.data_dir)
    return record.url if record else settings.local_url()


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class EmbeddedServer:
    """The demo's own server, on a thread of this process, for when none is running."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self.server, self.thread = server, thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)  # its shutdown removes the data dir's record and releases the lock


def _start_embedded(args: argparse.Namespace, settings: Settings, url: str) -> EmbeddedServer:
    """Start a server at `url` on the data dir, unless another journeyd already uses it."""
    import uvicorn

    from journeyd.api.app import create_app
    from journeyd.runtime import build_runtime
    from journeyd.serving import RecordedServer, read_record

    record = read_record(settings.data_dir)
    if record is not None:
        raise CommandFailed(
            f"demo: nothing answers at {url}, and the journeyd at {record.url} already uses {settings.data_dir}; "
            f"run `journeyd demo --url {record.url}`"
        )
    parsed = urlsplit(url)
    settings = _settings(argparse.Namespace(**{**vars(args), "host": parsed.hostname, "port": parsed.port or 80}))
    try:
        runtime = build_runtime(settings)
        runtime.lock.acquire()
    except (ValueError, OSError, RuntimeError) as error:  # a busy data dir, a bad model: say so, start nothing
        raise CommandFailed(f"demo: nothing answers at {url}, and no server could start there: {error}") from None
    print(f"no journeyd at {url}; starting one with data in {settings.data_dir}", file=sys.stderr)
    config = uvicorn.Config(create_app(runtime), host=settings.host, port=settings.port, log_level="warning")
    server = RecordedServer(config, settings)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            runtime.lock.release()
            raise CommandFailed(f"demo: could not start a server at {url}")
        time.sleep(0.05)
    return EmbeddedServer(server, thread)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="journeyd", description="Midjourney-style image tasks on your own hardware")
    parser.add_argument("--version", action="version", version=f"journeyd {importlib.metadata.version('journeyd')}")
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--data-dir", help="database and images (default ./journeyd-data, or JOURNEYD_DATA_DIR)")
        sub.add_argument(
            "--database-url", help="sqlite:///file (default: in the data dir) or postgresql://user@host:port/db"
        )

    def fleet(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--broker-url", help="amqp://user:pw@host:5672// : hand tasks to `journeyd worker`s")
        sub.add_argument("--storage-url", help="file:///path (default: in the data dir) or s3://bucket/prefix")

    def engine_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--engine",
            help="auto (default: diffusers when torch, diffusers and a model are there, else classic), "
            "classic (CPU, no weights), diffusers, or paced (load tests: each Imagine waits "
            "JOURNEYD_PACED_TASK_MS and draws flat colours)",
        )
        sub.add_argument(
            "--model",
            help="diffusers: a name from `journeyd models list`, a hub id, a diffusers folder or a .safetensors, "
            "for every --v",
        )
        sub.add_argument("--models", help="diffusers: TOML file of [[profile]] tables mapping --v to models")
        sub.add_argument("--model-family", help="diffusers: sd15, sdxl or flux, when it cannot be told")
        sub.add_argument(
            "--device",
            help="diffusers: cuda, cuda:N, mps or cpu, or a comma list (cuda:0,cuda:1) for one engine on each "
            "(default: every GPU there is, else the best device)",
        )
        sub.add_argument(
            "--dtype",
            choices=("auto", "float32", "bfloat16", "float16"),
            help="diffusers: auto (default: bf16/fp16 on a GPU, bf16 on a CPU with native bf16, else fp32)",
        )
        sub.add_argument(
            "--speedups",
            help="diffusers: auto (default), none, or "
            "channels_last,fused_qkv,compile,cuda_graphs,compile_vae,fp8,cache",
        )
        sub.add_argument("--log-level", default="info")
        sub.add_argument(
            "--log-format", choices=("text", "json"), help="text (default) or json: one JSON object per line"
        )

    serve_parser = commands.add_parser("serve", help="run the API server")
    common(serve_parser)
    serve_parser.add_argument(
        "--durability",
        choices=("full", "fast"),
        help="full (default): what is acknowledged survives a power cut; fast: only the process dying",
    )
    serve_parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port (default 8080)")
    engine_flags(serve_parser)
    fleet(serve_parser)
    serve_parser.add_argument(
        "--workers", type=int, help="in-process worker threads (default: one per device; 0 = an API node)"
    )
    serve_parser.add_argument("--public-url", help="base URL clients reach this server at")
    serve_parser.add_argument("--prices", help="price table: JSON/TOML file or inline JSON (billing off if unset)")
    serve_parser.add_argument("--insecure", action="store_true", help="listen beyond loopback without API keys")
    serve_parser.set_defaults(func=serve)

    worker_parser = commands.add_parser("worker", help="a worker process of a fleet (Celery over RabbitMQ)")
    common(worker_parser)
    engine_flags(worker_parser)
    fleet(worker_parser)
    worker_parser.add_argument(
        "--worker-metrics", metavar="[HOST:]PORT", help="serve this worker's /metrics there (default: none)"
    )
    worker_parser.set_defaults(func=worker)

    migrate_parser = commands.add_parser("migrate", help="bring the database schema up to date, then exit")
    common(migrate_parser)
    migrate_parser.set_defaults(func=migrate)

    keys_parser = commands.add_parser("keys", help="manage API keys")
    key_commands = keys_parser.add_subparsers(dest="keys_command", required=True)
    create_parser = key_commands.add_parser("create", help="create a key and print it (shown once)")
    common(create_parser)
    create_parser.add_argument("--credits", type=int, default=0, help="starting balance")
    create_parser.add_argument("--name", help="a note to tell keys apart")
    create_parser.set_defaults(func=keys_create)
    list_parser = key_commands.add_parser("list", help="list keys (never their secrets)")
    common(list_parser)
    list_parser.set_defaults(func=keys_list)
    revoke_parser = key_commands.add_parser("revoke", help="revoke a key for good (its requests get 403)")
    common(revoke_parser)
    revoke_parser.add_argument("key_id", help="the key's id, as `keys list` shows it")
    revoke_parser.set_defaults(func=keys_revoke)
    credit_parser = key_commands.add_parser("credit", help="add credits to a key (a top-up, in the ledger)")
    common(credit_parser)
    credit_parser.add_argument("key_id", help="the key's id, as `keys list` shows it")
    credit_parser.add_argument("credits", type=_positive, help="how many credits to add")
    credit_parser.set_defaults(func=keys_credit)

    tasks_parser = commands.add_parser("tasks", help="look at tasks in the database, without the API")
    task_commands = tasks_parser.add_subparsers(dest="tasks_command", required=True)
    tasks_list_parser = task_commands.add_parser("list", help="the newest tasks, one line each")
    common(tasks_list_parser)
    tasks_list_parser.add_argument("--limit", type=_positive, default=20, help="how many (default 20)")
    tasks_list_parser.add_argument(
        "--status",
        type=_status,
        action="append",
        help="only tasks in this status: SUBMITTED, IN_PROGRESS, SUCCESS, FAILURE, MODAL or CANCEL (repeatable)",
    )
    tasks_list_parser.set_defaults(func=tasks_list)
    tasks_show_parser = task_commands.add_parser("show", help="one task: status, prompt, times, images")
    common(tasks_show_parser)
    tasks_show_parser.add_argument("task_id", help="any of its ids: task_<ULID>, the ULID, a number or a messageId")
    tasks_show_parser.set_defaults(func=tasks_show)

    add_model_commands(commands)

    demo_parser = commands.add_parser("demo", help="imagine -> U1 -> Vary (Region) -> modal, print the URLs")
    common(demo_parser)
    demo_parser.add_argument(
        "--url",
        help="server to use (default: the one running on the data dir, else 127.0.0.1:8080, started if absent)",
    )
    demo_parser.add_argument("--port", type=int, help="server to use on this machine, by port")
    demo_parser.add_argument("--key", help="API key, if the server has keys")
    demo_parser.add_argument("--prompt", default="a lighthouse on a rocky coast at sunset, ocean waves --ar 3:2")
    demo_parser.set_defaults(func=demo)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except StorageUnavailable as error:  # a data dir journeyd cannot write: where and why, no traceback
        print(f"journeyd: cannot {error.doing} {error.place}: {error.problem}", file=sys.stderr)
        return 2
    except (BadUrl, CommandFailed) as error:
        print(f"journeyd: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
