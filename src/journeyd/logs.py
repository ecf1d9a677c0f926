"""Logging, configured in one place: readable text by default, one JSON object per line with
`--log-format json` (`JOURNEYD_LOG_FORMAT`).

A structured line passes its fields as `extra={"fields": {...}}`: JSON has them as keys of the
object, text as key=value after the message (but for those named in `extra={"in_message": (...)}`,
which the message already shows; a None is left out). The request being answered, if any, is in the
`current_request` context variable, so a line written deep below the API (a task moving) can
name the request that caused it.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]
KEY_PREFIX = "key_prefix"  # where auth notes the caller's key prefix in the request's state
_PLAIN = re.compile(r'[^\s"=]+')  # a text value shown without quotes


@dataclass(frozen=True)
class RequestInfo:
    id: str
    state: MutableMapping[str, Any]  # the request's own state: auth writes the key prefix into it

    @property
    def key_prefix(self) -> str | None:
        return self.state.get(KEY_PREFIX)


current_request: ContextVar[RequestInfo | None] = ContextVar("journeyd_request", default=None)


def fields_of(record: logging.LogRecord) -> Mapping[str, Any]:
    return getattr(record, "fields", None) or {}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(fields_of(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        shown = getattr(record, "in_message", ())
        return line + "".join(
            f" {name}={_text_value(value)}"
            for name, value in fields_of(record).items()
            if value is not None and name not in shown
        )


def _text_value(value: Any) -> str:
    text = str(value)
    if _PLAIN.fullmatch(text) and text.isprintable():
        return text
    return orjson.dumps(text).decode()  # quoted and escaped: a path cannot forge a second line


def configure(log_format: LogFormat = "text", level: str = "info") -> None:
    """Send every logger's lines (journeyd's and uvicorn's) to stderr in `log_format`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # a library's warning is a line in the same format, not a stray one
