"""Idempotent submits: a retried request with the same `Idempotency-Key` gets the first one's task.

The semantics of the IETF draft "The Idempotency-Key HTTP Header Field": the same key with the same
request returns the original task (never a second task or a second charge), the same key with a
different request is a 422, and a key belongs to one API key for 24 hours.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from journeyd.domain.errors import InvalidRequest

TTL_MS = 24 * 3600 * 1000
MAX_KEY_CHARS = 255
HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class Idempotency:
    """A request's idempotency key and the fingerprint of what it asked for."""

    key: str
    fingerprint: str


def parse_key(value: str) -> str:
    """The key from the header: a structured-field string (`"abc"`), or the bare token most clients send."""
    key = value.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key or len(key) > MAX_KEY_CHARS or not all("!" <= char <= "~" and char not in '"\\' for char in key):
        raise InvalidRequest(
            f"{HEADER} must be 1 to {MAX_KEY_CHARS} visible ASCII characters without quotes or backslashes, "
            "such as a UUID"
        )
    return key


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests "the same request": where they were sent, and every byte of the body."""
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(body)
    return digest.hexdigest()
