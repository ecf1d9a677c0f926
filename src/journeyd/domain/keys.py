"""API keys: shown once, stored only as a SHA-256 hash.

Keys are 256-bit random tokens, so a fast hash is enough; a slow one would add latency to every
request and no security.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

KEY_PREFIX = "jd_"


@dataclass(frozen=True)
class ApiKey:
    id: str
    prefix: str  # the first characters, to tell keys apart in listings
    name: str
    balance: int
    created_at: int
    revoked: bool = False


@dataclass(frozen=True)
class Charge:
    """One debit of a key for one step of a task."""

    key_id: str
    step: str  # "submit" or "modal": a task is charged at most once per step
    price_key: str
    amount: int


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
