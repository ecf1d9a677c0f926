"""Settings, read from `JOURNEYD_*` environment variables (and `journeyd serve` flags)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from journeyd.domain.pricing import PriceTable


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOURNEYD_", extra="ignore")

    data_dir: Path = Field(Path("./journeyd-data"), description="SQLite database and images live here")
    durability: Literal["full", "fast"] = Field(
        "full",
        description="full: every acknowledged write is on the disk (synchronous=FULL, images fsynced); "
        "fast: survives the process dying, not a power cut",
    )
    database_url: str | None = Field(
        None,
        description="sqlite:///path (default: journeyd.sqlite3 in the data dir) or "
        "postgresql://user:pw@host:port/db, which several API nodes and workers share",
    )
    broker_url: str | None = Field(
        None,
        description="unset: worker threads in this process; amqp://user:pw@host:5672// : Celery over RabbitMQ, "
        "with `journeyd worker` processes doing the work",
    )
    broker_namespace: str = Field(
        "journeyd",
        pattern=r"^[a-z][a-z0-9_-]{0,39}$",
        description="Prefix of the RabbitMQ exchange and queues, so several deployments can share one broker",
    )
    storage_url: str | None = Field(
        None,
        description="file:///path (default: images/ in the data dir) or s3://bucket/prefix, with the standard "
        "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION",
    )
    handover_s: float = Field(
        30.0,
        gt=0,
        description="A queued task no worker took this long after its hand-over is handed to the broker again",
    )
    unserved_s: float = Field(
        600.0,
        gt=0,
        description="Fleet: a model counts as served while a worker serving it announced itself this recently; "
        "a submit for a model no live worker serves is refused, and a task queued this long for a model nobody "
        "served in that time fails with a refund (the same on every node and worker)",
    )
    min_free_mb: int = Field(64, ge=0, description="/readyz fails when the images folder has less free space (MiB)")
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = Field(None, description="Base URL clients reach us at; image URLs start with it")
    allowed_hosts: str | None = Field(
        None,
        description="Host names served besides loopback, the bind address and public_url: comma-separated, "
        "'*.example.com' for subdomains, '*' for any",
    )
    cors_origins: str | None = Field(
        None, description="Browser origins (https://app.example) allowed to call the API: comma-separated; unset = off"
    )
    insecure: bool = Field(False, description="Allow listening beyond loopback with no API key created")

    engine: str = Field(
        "auto",
        description="auto (diffusers when torch, diffusers and a model are there: a named one, or a catalog "
        "model in the Hugging Face cache; else classic), classic (CPU, no weights), diffusers (open models) or "
        "paced (load tests: Imagine waits --paced-task-ms and draws flat colours)",
    )
    model: str | None = Field(
        None, description="diffusers: catalog name, hub id, diffusers folder or .safetensors, for every --v"
    )
    model_family: str | None = Field(None, description="diffusers: sd15, sdxl or flux, when it cannot be told")
    models: str | None = Field(None, description="diffusers: a TOML file of [[profile]] tables, --v to model")
    device: str | None = Field(
        None,
        description="diffusers: cuda, cuda:N, mps or cpu, or a comma list for one engine on each "
        "(default: every GPU there is, else the best device)",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="diffusers: auto = bf16/fp16 on a GPU, bf16 on a CPU with native bf16, else fp32"
    )
    speedups: str = Field(
        "auto",
        description="diffusers: auto, none, or a comma list of levers "
        "(channels_last, fused_qkv, compile, cuda_graphs, compile_vae, fp8, cache)",
    )
    workers: int | None = Field(
        None, ge=0, description="In-process worker threads (default: one per engine device); 0 leaves tasks queued"
    )
    batch_tasks: int = Field(
        1, ge=1, le=16, description="Compatible Imagine tasks queued back to back drawn in one engine call (diffusers)"
    )
    classic_size: int = Field(512, ge=64, le=2048, description="Side of a square classic-engine image")
    classic_step_s: float = Field(
        0.0, ge=0, le=10, description="classic: each step also waits this long (a GPU's pace, for tests and benches)"
    )
    paced_task_ms: int = Field(200, ge=0, le=600_000, description="paced: how long each Imagine takes")

    modal_timeout_s: float = Field(1800, gt=0, description="A MODAL task not given a modal is cancelled after this")
    lease_s: float = Field(60, gt=0, description="A running task whose worker is silent this long is requeued")
    stall_s: float = Field(
        600,
        gt=0,
        description="A worker keeps renewing the lease of a task whose engine is in one long step, until the "
        "engine has reported no step this long: then it is taken to be hung, and the lease reclaim requeues the task",
    )
    max_attempts: int = Field(3, ge=1, description="Runs a task gets before it fails for good")
    sweep_interval_s: float = Field(1.0, gt=0)
    events_poll_s: float = Field(
        0.4,
        gt=0,
        le=10,
        description="How often each /mj/task/events stream reads the store for task changes where the store "
        "cannot say when a task changed (a PostgreSQL node while it is not listening); else on each change",
    )
    max_queued_per_key: int = Field(50, ge=0, description="Queued and running tasks per key; 0 = no limit")

    prices: str | None = Field(None, description="Price table: a JSON/TOML file, or inline JSON; unset = free")

    banned_words: str | None = Field(None, description="Words refused in prompts: comma-separated, or a file")
    notify_hook: str | None = Field(None, description="Default webhook for tasks that name none (Task JSON)")
    webhook_secret: str | None = Field(None, description="whsec_<base64>; made and kept in the data dir if unset")
    webhook_timeout_s: float = Field(10.0, gt=0)
    allow_private_webhooks: bool = Field(False, description="Let webhooks reach private and loopback addresses")

    log_format: Literal["text", "json"] = Field("text", description="Log lines: readable text, or one JSON object each")
    metrics_public: bool = Field(False, description="Serve /metrics beyond loopback without a key")
    worker_metrics: str | None = Field(
        None,
        description="`journeyd worker`: serve its own /metrics at HOST:PORT or PORT (on 127.0.0.1), for a "
        "Prometheus on the worker's box; unset: none",
    )

    allow_private_urls: bool = Field(False, description="Let mask_url and image URLs reach private addresses")
    fetch_timeout_s: float = Field(10.0, gt=0)
    max_fetch_bytes: int = Field(16 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(40_000_000, gt=0, description="One image a client sends (mask, image prompt)")
    max_request_pixels: int = Field(64_000_000, gt=0, description="All the image prompts of one request together")
    max_output_pixels: int = Field(16_777_216, gt=0, description="Zoom and pan canvases are scaled to fit")
    max_request_bytes: int = Field(32 * 1024 * 1024, gt=0)
    read_timeout_s: float = Field(
        30.0, gt=0, description="A request's headers, and each piece of its body, must arrive within this"
    )

    @property
    def durable(self) -> bool:
        return self.durability == "full"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "journeyd.sqlite3"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.database_path.resolve()}"

    @property
    def storage(self) -> str:
        return self.storage_url or f"file://{self.images_dir.resolve()}"

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        return self.local_url()

    def local_url(self, port: int | None = None) -> str:
        """Where this machine reaches the server: its bind address (loopback for a wildcard one)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        host = "127.0.0.1" if host in ("0.0.0.0", "[::]") else host
        return f"http://{host}:{self.port if port is None else port}"

    def allowed_host_list(self) -> list[str]:
        return _comma_list(self.allowed_hosts)

    def cors_origin_list(self) -> list[str]:
        return _comma_list(self.cors_origins)

    def banned_word_list(self) -> list[str]:
        if not self.banned_words:
            return []
        path = Path(self.banned_words)
        text = path.read_text() if "," not in self.banned_words and path.is_file() else self.banned_words
        return [word.strip() for word in text.replace("\n", ",").split(",") if word.strip()]

    def price_table(self) -> PriceTable:
        if not self.prices:
            return PriceTable()
        text = self.prices.strip()
        if not text.startswith("{"):
            path = Path(text)
            text = path.read_text()
            if path.suffix == ".toml":
                return PriceTable(tomllib.loads(text).get("prices", {}))
        return PriceTable(json.loads(text))


def _comma_list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]
