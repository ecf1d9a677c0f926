"""Which models a fleet's workers serve, from what they announce in the store.

Every `journeyd worker` process announces itself every few seconds: its node name and the routing
labels it serves (`engines.base.served_models`). A model counts as served while a worker serving it
has announced itself within the window (`JOURNEYD_UNSERVED_S`). With that, an API node

- refuses a submit for a model no worker serves, with a 422 naming the models the workers do serve,
  as long as some worker is live; with none at all (a fleet starting, every worker restarting) the
  task is accepted and waits, as the task row is the truth;
- fails, with a refund, a task that waited longer than the window for a model nobody served in that
  time. Without this it would wait forever: RabbitMQ drops a bell that no queue is bound for, and the
  hand-over sweep would ring it again and again.

The embedded mode has no roster: its worker threads take any model.
"""

from __future__ import annotations

from dataclasses import dataclass

from journeyd.clock import Clock
from journeyd.domain.errors import Unprocessable
from journeyd.domain.prompt import PromptSpec
from journeyd.domain.routing import routing_label
from journeyd.store.base import TaskStore

ANNOUNCE_EVERY_S = 5.0  # a worker's announcements, at most this far apart
READ_EVERY_MS = 1_000  # a node reads the announcements at most this often: not one query per submit
FORGET_AFTER_MS = 86_400_000  # a worker silent this long is forgotten (each process announces under its own name)


def announce_interval(window_s: float) -> float:
    """How often a worker announces itself: every 5 s, or four times per window where that is more
    often, so a live worker never drops out of the window between two announcements."""
    return min(ANNOUNCE_EVERY_S, window_s / 4)


@dataclass(frozen=True)
class Served:
    """What the workers seen within the window serve."""

    workers: int
    models: frozenset[str]
    anything: bool  # one of them serves every label (the classic engine, a "*" profile)

    def serves(self, label: str) -> bool:
        return self.anything or label in self.models

    def listing(self) -> str:
        return ", ".join(sorted(self.models)) if self.models else "nothing (no worker is running)"


class Roster:
    """An API node's view of the workers' announcements, and the two rules built on it (above)."""

    def __init__(self, store: TaskStore, clock: Clock, *, window_ms: int) -> None:
        self.store, self.clock, self.window_ms = store, clock, window_ms
        self._last: tuple[int, Served] | None = None  # (read at, what was read): one value, swapped whole

    def served(self) -> Served:
        """The models served now, as announced within the window (read again at most every second)."""
        now, last = self.clock.now_ms(), self._last
        if last is not None and now - last[0] < READ_EVERY_MS:
            return last[1]
        seen = self.store.workers_seen(now - self.window_ms)
        models = frozenset(label for worker in seen for label in worker.models or ())
        served = Served(len(seen), models, any(worker.models is None for worker in seen))
        self._last = (now, served)
        return served

    def check(self, spec: PromptSpec) -> None:
        """Refuse a task for a model none of the live workers serves (accepted when no worker is live)."""
        label, served = routing_label(spec), self.served()
        if served.workers and not served.serves(label):
            raise Unprocessable(
                f"no worker serves model {label}; the workers serve {served.listing()}: "
                "choose one of those, or start a worker with that model"
            )

    def fail_unserved(self) -> list[str]:
        """Fail, refunded, the tasks queued longer than the window for a model nobody served in it."""
        served = self.served()
        if served.anything:
            return []
        now, seconds = self.clock.now_ms(), f"{self.window_ms / 1000:g}"
        return self.store.fail_unserved(
            now,
            now - self.window_ms,
            sorted(served.models),
            lambda label: (
                f"no worker served model {label} for {seconds} s (the workers serve {served.listing()}); "
                "the task was refunded"
            ),
        )

    def forget_silent(self) -> int:
        return self.store.forget_workers(self.clock.now_ms() - FORGET_AFTER_MS)
