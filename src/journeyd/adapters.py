"""Which adapter serves each port, chosen from the settings' three URLs: the one module that imports them.

Embedded (the default, no URL set): SQLite in the data dir, images in a folder beside it, worker
threads in this process. A fleet: `postgresql://` for the truth, `s3://` for the images, and
`amqp://` to hand tasks to `journeyd worker` processes over RabbitMQ.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from journeyd.config import Settings
from journeyd.media.storage import MIB, ImageStore, check_writable
from journeyd.media.stores import open_image_store
from journeyd.service import Dispatcher
from journeyd.store.base import TaskStore, TransitionObserver
from journeyd.worker import Worker


class RunningDispatcher(Dispatcher, Protocol):
    """The dispatcher as the runtime holds it: started with the server, stopped with it."""

    def start(self) -> None: ...

    def stop(self, timeout_s: float = 30.0) -> None: ...


class BadUrl(ValueError):
    """A URL setting journeyd cannot use; the message names the setting and what it takes."""


def _sqlite_path(url: str) -> Path:
    """sqlite:///relative/file or sqlite:////absolute/file, as SQLAlchemy writes them."""
    path = url.removeprefix("sqlite:///")
    if not path or path == url:
        raise BadUrl(f"JOURNEYD_DATABASE_URL {url!r}: write sqlite:///path/to/file.sqlite3")
    return Path(path)


def open_store(
    settings: Settings, *, on_transition: TransitionObserver | None = None, cache_live: bool = False
) -> TaskStore:
    """`cache_live`: a node that clients poll keeps unfinished tasks in memory where the store is shared
    (PostgreSQL, each until it hears of a change); a SQLite file is read in microseconds anyway."""
    url = settings.database
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = _sqlite_path(url)
        check_writable(path.parent, durable=settings.durable)
        from journeyd.store.sqlite import SqliteStore

        return SqliteStore(path, durable=settings.durable, on_transition=on_transition)
    if scheme in ("postgresql", "postgres"):
        from journeyd.store.postgres import InvalidDatabaseUrl, PostgresStore

        try:
            return PostgresStore(url, on_transition=on_transition, cache_live=cache_live)
        except InvalidDatabaseUrl as error:
            raise BadUrl(f"JOURNEYD_DATABASE_URL: {error}") from None
    raise BadUrl(f"JOURNEYD_DATABASE_URL {safe_url(url)!r}: use sqlite:///path or postgresql://user@host:port/db")


def open_images(settings: Settings) -> ImageStore:
    """The images store JOURNEYD_STORAGE_URL names (see `media/stores.py`)."""
    try:
        return open_image_store(settings.storage, durable=settings.durable, min_free_bytes=settings.min_free_mb * MIB)
    except ValueError as error:
        raise BadUrl(f"JOURNEYD_STORAGE_URL: {error}") from None


def open_dispatcher(settings: Settings, workers: Sequence[Worker]) -> RunningDispatcher:
    """Threads for `workers` when no broker is set; else bells over Celery (this process runs no worker)."""
    if settings.broker_url is None:
        from journeyd.dispatch.local import LocalDispatcher

        return LocalDispatcher(workers)
    if urlsplit(settings.broker_url).scheme not in ("amqp", "amqps", "pyamqp"):
        raise BadUrl(f"JOURNEYD_BROKER_URL {safe_url(settings.broker_url)!r}: use amqp://user:pw@host:5672//")
    from journeyd.dispatch.celery import CeleryDispatcher, make_celery

    namespace = settings.broker_namespace
    return CeleryDispatcher(make_celery(settings.broker_url, namespace=namespace), namespace=namespace)


def safe_url(url: str) -> str:
    """The URL with its password, if any, replaced by ***: for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
