"""Request field types shared by the dialects: what a client may hand us to keep and give back."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, Field

MAX_METADATA_DEPTH = 32


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (iteratively: the input is hostile)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > MAX_METADATA_DEPTH:
                break
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def storable(value: Any) -> Any:
    """Metadata is stored, then returned with every fetch and webhook: it must be JSON we can write."""
    if _depth(value) > MAX_METADATA_DEPTH:
        raise ValueError(f"nests more than {MAX_METADATA_DEPTH} levels deep; flatten it")
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError as error:
        raise ValueError(f"cannot be stored as JSON ({error}); integers must fit in 64 bits") from None
    return value


Metadata = Annotated[Any, AfterValidator(storable), Field(description="Kept with the task and returned with it")]
ClientText = Annotated[str, Field(max_length=4096)]  # state, ref: echoed back, so bounded
HookUrl = Annotated[str, Field(max_length=2048)]
