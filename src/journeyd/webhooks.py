"""Webhooks: task updates delivered from the durable outbox, signed per Standard Webhooks.

The store writes an outbox row in the same transaction as every change of a task that has a hook,
so a committed change is never lost and a rolled-back one is never sent. The notifier sends each
task's updates in order; when an attempt fails and a newer update of the same task is already
waiting, the older one is superseded rather than retried, so a stale update never arrives after a
newer one. Retries follow the Standard Webhooks schedule, with jitter, and survive restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import random
import secrets
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from journeyd import metrics
from journeyd.clock import Clock
from journeyd.domain.errors import InvalidRequest, JourneydError
from journeyd.domain.task import Task
from journeyd.media.fetch import Posted
from journeyd.store.base import Delivery, TaskStore

log = logging.getLogger("journeyd.webhooks")

# Seconds to wait after the n-th failed attempt (the first attempt is immediate): Standard Webhooks.
RETRY_SCHEDULE_S = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
THROTTLED = frozenset({429, 502, 503, 504})  # honour Retry-After for these
# A sweep holds the deliveries it took this long: another API node's sweep leaves them alone meanwhile,
# and a node that dies mid-sweep delays them by this much (at-least-once, never lost)
HOLD_MS = 300_000
GONE = 410  # the receiver says the endpoint is gone: stop

Renderer = Callable[[Task, str], Mapping[str, Any]]  # (task, image base URL) -> JSON payload


class Poster(Protocol):
    def post(self, url: str, body: bytes, headers: dict[str, str], *, what: str) -> Posted: ...


class Signer:
    """`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` over
    "{id}.{timestamp}.{body}", with the secret given as `whsec_<base64>`."""

    def __init__(self, secret: str) -> None:
        if not secret.startswith("whsec_"):
            raise ValueError("the webhook secret must look like whsec_<base64>")
        self.secret = secret
        self._key = base64.b64decode(secret.removeprefix("whsec_"))

    def headers(self, message_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
        signed = f"{message_id}.{timestamp_s}.".encode() + body
        signature = base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest()).decode()
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp_s),
            "webhook-signature": f"v1,{signature}",
            "content-type": "application/json",
        }


def load_secret(configured: str | None, data_dir: Path) -> str:
    """The configured secret, or one made on first start and kept in the data dir."""
    if configured:
        return configured
    path = data_dir / "webhook-secret"
    if path.exists():
        return path.read_text().strip()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


class Notifier:
    def __init__(
        self,
        store: TaskStore,
        poster: Poster,
        signer: Signer,
        renderers: dict[str, Renderer],
        *,
        clock: Clock,
        base_url: str,
        rng: random.Random | None = None,
    ) -> None:
        self.store, self.poster, self.signer, self.renderers = store, poster, signer, renderers
        self.clock, self.base_url = clock, base_url.rstrip("/")
        self._rng = rng or random.Random()

    def run_once(self, max_rounds: int = 1000) -> int:
        """Send what is due until nothing is: each task's next update follows as soon as the one
        before it is delivered. Returns how many deliveries were attempted or superseded."""
        handled = 0
        for _ in range(max_rounds):
            due = self.store.due_deliveries(self.clock.now_ms(), hold_ms=HOLD_MS)
            if not due:
                break
            for delivery in due:
                self._deliver(delivery)
            handled += len(due)
        return handled

    def _deliver(self, delivery: Delivery) -> None:
        now = self.clock.now_ms()
        if delivery.attempts and delivery.newer_pending:
            self._settle(delivery, now, state="superseded", error="a newer update replaced it")
            return
        task = delivery.task
        body = orjson.dumps(self.renderers[delivery.hook.format](task, f"{self.base_url}/images"))
        headers = self.signer.headers(f"msg_{task.id}_{task.version}", now // 1000, body)
        what = "notifyHook" if delivery.hook.format == "mj" else "webhookOverride"
        try:
            answer = self.poster.post(delivery.hook.url, body, headers, what=what)
        except InvalidRequest as error:  # the URL itself is unusable: retrying cannot help
            self._settle(delivery, now, state="failed", error=error.message)
            return
        except JourneydError as error:  # unreachable, timed out, now resolves to a private address
            self._retry(delivery, now, error.message, None)
            return
        if 200 <= answer.status < 300:
            self._settle(delivery, now, state="delivered")
        elif answer.status == GONE:
            self._settle(delivery, now, state="failed", error="the receiver answered 410 Gone")
        else:
            retry_after = answer.retry_after if answer.status in THROTTLED else None
            self._retry(delivery, now, f"the receiver answered HTTP {answer.status}", retry_after)

    def _settle(self, delivery: Delivery, now: int, *, state: str, **attempt: Any) -> None:
        self.store.settle_delivery(delivery.id, now, state=state, **attempt)
        metrics.webhook_delivery("retry" if state == "pending" else state)

    def _retry(self, delivery: Delivery, now: int, error: str, retry_after: str | None) -> None:
        if delivery.attempts >= len(RETRY_SCHEDULE_S):
            self._settle(delivery, now, state="failed", error=f"{error}; gave up")
            log.warning("webhook %s for task %s failed for good: %s", delivery.id, delivery.task.id, error)
            return
        wait_s = RETRY_SCHEDULE_S[delivery.attempts] * self._rng.uniform(0.9, 1.1)
        wait_s = max(wait_s, _retry_after_s(retry_after, now))
        self._settle(delivery, now, state="pending", error=error, retry_at=now + int(wait_s * 1000))


def _retry_after_s(value: str | None, now_ms: int) -> float:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; 0 if absent or unreadable."""
    if not value:
        return 0.0
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now_ms / 1000)
    except (TypeError, ValueError):
        return 0.0
