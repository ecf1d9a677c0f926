"""Logging, configured in one place: readable text by default, one JSON object per line with
`--log-format json` (`JOURNEYD_LOG_FORMAT`).

A structured line passes its fields as `extra={"fields": {...}}`: JSON has them as keys of the
object, text as key=value after the message (but for those named in `extra={"in_message": (...)}`,
which the message already shows; a None is left out). The request being answered, if any, is in the
`current_request` context variable, so a line written deep below the API (a task moving) can
name the request that caused it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]
_PLAIN = re.compile(r'[^\s"=]+')  # a text value shown without quotes


@dataclass(frozen=True)
class RequestInfo:
    id: str
    state: MutableMapping[str, Any]  # the request's own state (request.state)

    @property
    def key_prefix(self) -> str | None:
        return self.state.get("key_prefix")  # noted there by api.auth.caller_of


current_request: ContextVar[RequestInfo | None] = ContextVar("journeyd_request", default=None)


def fields_of(record: logging.LogRecord) -> Mapping[str, Any]:
    return getattr(record, "fields", None) or {}


class _Seconds:
    """A timestamp's seconds, formatted once a second rather than once a line."""

    def __init__(self, pattern: str, convert: Callable[[float], time.struct_time]) -> None:
        self.pattern, self.convert = pattern, convert
        self._cached = (-1, "")

    def __call__(self, created: float) -> str:
        second, text = self._cached
        if int(created) != second:
            second = int(created)
            text = time.strftime(self.pattern, self.convert(second))
            self._cached = (second, text)
        return text


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._seconds = _Seconds("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": f"{self._seconds(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(fields_of(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(entry, default=str).decode()
        except orjson.JSONEncodeError:  # a lone surrogate: still one line, escaped
            return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`2026-01-01 12:00:00,123 INFO journeyd.http: <message> key=value ...`, in local time."""

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _Seconds("%Y-%m-%d %H:%M:%S", time.localtime)

    def format(self, record: logging.LogRecord) -> str:
        shown = getattr(record, "in_message", ())
        line = (
            f"{self._seconds(record.created)},{int(record.msecs):03d} {record.levelname} {record.name}: "
            f"{record.getMessage()}"
        )
        line += "".join(
            f" {name}={plain(value)}"
            for name, value in fields_of(record).items()
            if value is not None and name not in shown
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def plain(value: Any) -> str:
    """A value for a text line: as it is, or quoted and escaped if it holds a space, a quote, an `=`
    or a control character (so a request path cannot forge a second line)."""
    text = str(value)
    if _PLAIN.fullmatch(text) and text.isprintable():
        return text
    return json.dumps(text)


def configure(log_format: LogFormat = "text", level: str = "info") -> None:
    """Send every logger's lines (journeyd's and uvicorn's) to stderr in `log_format`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Neither format shows the caller's file and line, thread or process: skip gathering them on
    # every line (the optimisations the logging HOWTO suggests).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.captureWarnings(True)  # a library's warning is a line in the same format, not a stray one
