"""Task identities.

A task's id is a ULID (48-bit millisecond time + 80 random bits, Crockford base32). Each dialect
shows it in the form its clients expect: apimart as `task_<ULID>`; mymidjourney's messageId and the
job inside Midjourney customIds as the job UUID (the same 128 bits, formatted as a UUID), so a
customId always leads back to its task; midjourney-proxy as a numeric string (millisecond time + 3
digits, its own column). Every dialect accepts every form.
"""

from __future__ import annotations

import functools
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
ULID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
MAX_NUMBER = 2**63 - 1  # numeric ids are stored as signed 64-bit integers; a longer "id" names no task


def encode_ulid(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def decode_ulid(text: str) -> int:
    value = 0
    for char in text:
        value = (value << 5) | _DECODE[char]
    return value


class IdGenerator:
    """Makes ULIDs from an injected clock and entropy source, so tests get reproducible ids."""

    def __init__(self, now_ms: Callable[[], int], entropy: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self._now_ms = now_ms
        self._entropy = entropy

    def new(self) -> str:
        random_bits = int.from_bytes(self._entropy(10), "big")
        return encode_ulid(((self._now_ms() & ((1 << 48) - 1)) << 80) | random_bits)

    def number(self) -> int:
        """A midjourney-proxy task id: millisecond time and three random digits (16 digits today)."""
        return self._now_ms() * 1000 + int.from_bytes(self._entropy(2), "big") % 1000


def is_ulid(text: str) -> bool:
    return bool(ULID_RE.match(text))


@dataclass(frozen=True)
class TaskRef:
    """A task named in one of its forms: by id (ULID) or by midjourney-proxy number."""

    id: str | None = None
    number: int | None = None


def parse_task_ref(text: str) -> TaskRef | None:
    """`task_<ULID>`, a bare ULID, a job UUID or a numeric id; None if it is none of these."""
    text = text.strip()
    raw = text.removeprefix("task_")
    if is_ulid(raw.upper()) and len(raw) == 26:
        return TaskRef(id=raw.upper())
    if text.isascii() and text.isdigit() and 0 < len(text) <= 19 and int(text) <= MAX_NUMBER:
        return TaskRef(number=int(text))
    task_id = task_id_from_job(text) if len(text) == 36 else None
    return TaskRef(id=task_id) if task_id else None


@functools.lru_cache(maxsize=8192)
def job_uuid(task_id: str) -> str:
    """The Midjourney job id (a UUID) that stands for this task inside customIds."""
    return str(uuid.UUID(int=decode_ulid(task_id)))


def task_id_from_job(job: str) -> str | None:
    """The task id behind a job UUID, or None when `job` is not one of ours."""
    try:
        return encode_ulid(uuid.UUID(job).int)
    except ValueError:
        return None
