"""Where a bell goes: the broker names for routing a task to the workers that can draw its model.

One topic exchange per namespace. A bell for routing label L is published with the key `model.<L>`;
a worker's queue is named after the set of labels it serves and bound with one key per label (or
`model.#` when it serves any), so workers with the same set share a queue and a box that cannot draw
a model never sees its bells.
"""

from __future__ import annotations

from collections.abc import Sequence

from journeyd.domain.lifecycle import Speed

BELL_TASK = "journeyd.bell"
MAX_PRIORITY = 10  # the queues' x-max-priority: RabbitMQ keeps one sub-queue per level, so few levels
ANY_KEY = "model.#"

_PRIORITY = {Speed.RELAX: 0, Speed.FAST: 5, Speed.TURBO: MAX_PRIORITY}


def routing_key(model: str) -> str:
    """The key a bell for routing label `model` is published with; '.' separates words in a topic key,
    so "6.1" becomes "6_1"."""
    return "model." + model.replace(".", "_")


def binding_keys(models: Sequence[str] | None) -> list[str]:
    """The keys a queue serving `models` (None: any) is bound with."""
    return [ANY_KEY] if models is None else [routing_key(model) for model in sorted(set(models))]


def queue_name(namespace: str, models: Sequence[str] | None) -> str:
    """The queue for workers serving `models` (None: any): one per set of labels, shared by the
    workers that serve the same set."""
    if models is None:
        return f"{namespace}.any"
    return f"{namespace}.models." + ",".join(sorted(set(models)))


def bell_priority(speed: Speed) -> int:
    """Turbo bells go first; the database claim decides the order anyway, this only saves a turbo task
    from waiting behind relax bells that wake no one new."""
    return _PRIORITY[speed]
