"""Task statuses, actions and which status may follow which.

The store enforces these transitions with conditional updates; this table is the only place
that says what they are.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    SUBMITTED = "submitted"
    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    FAILURE = "failure"
    MODAL = "modal"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def refunds(self) -> bool:
        """Entering this status gives the task's charges back (exactly once)."""
        return self in (Status.FAILURE, Status.CANCELLED)


TERMINAL = frozenset({Status.SUCCESS, Status.FAILURE, Status.CANCELLED})

# The words the Midjourney API family (midjourney-proxy, apimart's MJ-style view) uses for them.
MIDJOURNEY_STATUS = {
    Status.SUBMITTED: "SUBMITTED",
    Status.IN_PROGRESS: "IN_PROGRESS",
    Status.SUCCESS: "SUCCESS",
    Status.FAILURE: "FAILURE",
    Status.MODAL: "MODAL",
    Status.CANCELLED: "CANCEL",
}

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.MODAL: frozenset({Status.SUBMITTED, Status.CANCELLED}),
    Status.SUBMITTED: frozenset({Status.IN_PROGRESS, Status.CANCELLED, Status.FAILURE}),
    # back to SUBMITTED when a worker died holding the task
    Status.IN_PROGRESS: frozenset({Status.SUCCESS, Status.FAILURE, Status.CANCELLED, Status.SUBMITTED}),
    Status.SUCCESS: frozenset(),
    Status.FAILURE: frozenset(),
    Status.CANCELLED: frozenset(),
}


def sources_of(target: Status) -> frozenset[Status]:
    """The statuses a task may be in for a move to `target` to be allowed."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


class Action(StrEnum):
    """Midjourney's action names, as tasks report them."""

    IMAGINE = "IMAGINE"
    UPSCALE = "UPSCALE"
    VARIATION = "VARIATION"
    REROLL = "REROLL"
    INPAINT = "INPAINT"
    ZOOM = "ZOOM"
    PAN = "PAN"
    DESCRIBE = "DESCRIBE"
    BLEND = "BLEND"
    SHORTEN = "SHORTEN"


class Op(StrEnum):
    """What the worker does to make a task's pixels."""

    GENERATE = "generate"  # imagine: a grid of 4
    PICK = "pick"  # U1-U4: one tile of a grid, untouched
    UPSCALE_SUBTLE = "upscale_subtle"
    UPSCALE_CREATIVE = "upscale_creative"
    VARY_SUBTLE = "vary_subtle"
    VARY_STRONG = "vary_strong"
    VARY_REGION = "vary_region"
    ZOOM_OUT = "zoom_out"
    PAN = "pan"
    DESCRIBE = "describe"  # four prompts for an image
    BLEND = "blend"  # a grid of 4 mixing 2..5 images
    SHORTEN = "shorten"  # a prompt's token weights and five shorter prompts

    @property
    def makes_grid(self) -> bool:
        return self not in (Op.PICK, Op.UPSCALE_SUBTLE, Op.UPSCALE_CREATIVE, Op.DESCRIBE, Op.SHORTEN)


class Speed(StrEnum):
    RELAX = "relax"
    FAST = "fast"
    TURBO = "turbo"

    @property
    def priority(self) -> int:
        """Turbo runs before fast, fast before relax; first come, first served within one speed."""
        return {Speed.RELAX: 0, Speed.FAST: 10, Speed.TURBO: 20}[self]
