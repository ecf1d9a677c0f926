"""The `Idempotency-Key` header of submit endpoints, read once for every dialect.

A route that takes it lists `IDEMPOTENT` among its dependencies (so the header is in the OpenAPI
document); the key and the request's fingerprint then travel with the Caller to the service, which
keeps the rule.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header
from starlette.requests import Request

from journeyd.domain.idempotency import HEADER, Idempotency, fingerprint, parse_key


async def read_idempotency_key(
    request: Request,
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="Retry-safe submits: the same key with the same body within 24 hours returns the first "
            "request's task instead of making (and charging) a second one; with another body it is a 422",
            max_length=257,
        ),
    ] = None,
) -> None:
    if key is not None:
        request.state.idempotency = Idempotency(
            parse_key(key), fingerprint(request.method, request.url.path, await request.body())
        )


def idempotency_of(request: Request) -> Idempotency | None:
    return getattr(request.state, "idempotency", None)


IDEMPOTENT = [Depends(read_idempotency_key)]
