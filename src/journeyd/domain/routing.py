"""Which workers may run a task: its routing label, from the model the prompt asked for.

A worker that loaded only some models claims (and, on a broker, consumes) only the labels it
serves, so a niji task never lands on a box without the niji model.
"""

from __future__ import annotations

from journeyd.domain.prompt import PromptSpec

DEFAULT_ROUTE = "default"  # no --v and no --niji: any worker's default model


def routing_label(spec: PromptSpec) -> str:
    """`--niji 6` -> "niji6", `--v 6.1` -> "6.1", neither -> "default"."""
    if spec.niji is not None:
        return f"niji{spec.niji}"
    if spec.version is not None:
        return spec.version
    return DEFAULT_ROUTE
