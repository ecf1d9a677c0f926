"""Errors a person can act on.

Every failure that reaches a client is one of these. Each carries the HTTP status it maps to,
so the dialects only choose an envelope; none of them decides what went wrong.
"""

from __future__ import annotations

from typing import Any, ClassVar


class JourneydError(Exception):
    """Base class: a message meant for the person who sent the request."""

    status: ClassVar[int] = 400
    kind: ClassVar[str] = "invalid_request"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(JourneydError):
    """The request is malformed: bad JSON, wrong types, values out of range."""


class Unauthorized(JourneydError):
    status = 401
    kind = "unauthorized"


class PaymentRequired(JourneydError):
    status = 402
    kind = "insufficient_credits"


class Forbidden(JourneydError):
    status = 403
    kind = "forbidden"


class NotFound(JourneydError):
    status = 404
    kind = "not_found"


class UnknownEndpoint(JourneydError):
    """No such path. Not a NotFound: /mj answers an unknown *task* with code 3, on which new-api
    disables the whole channel, and a mistyped path must not do that."""

    status = 404
    kind = "not_found"


class MethodNotAllowed(JourneydError):
    status = 405
    kind = "method_not_allowed"


class RequestTimeout(JourneydError):
    """The client sent its request too slowly (a stalled upload, or a connection held open on purpose)."""

    status = 408
    kind = "request_timeout"


class Conflict(JourneydError):
    """The request is fine but the task is not in a state that allows it (yet)."""

    status = 409
    kind = "conflict"


class TooLarge(JourneydError):
    status = 413
    kind = "too_large"


class Unprocessable(JourneydError):
    """The request is well formed but its content cannot be used: a mask that is not an image,
    a URL that cannot be fetched, a mask that selects nothing."""

    status = 422
    kind = "unprocessable"


class RateLimited(JourneydError):
    status = 429
    kind = "rate_limited"


class InternalError(JourneydError):
    """Our fault, not the client's: logged in full, answered with a short message."""

    status = 500
    kind = "internal_error"


class StorageUnavailable(InternalError):
    """journeyd cannot write its data (disk full, read-only, failing; an S3 server down, a bucket
    missing): the operator's to fix, not the client's, and journeyd recovers by itself once it is
    fixed. Names the place, the problem and (`doing`) whether it was writing, reading or reaching it."""

    status = 503
    kind = "storage_unavailable"

    def __init__(self, place: object, problem: str, remedy: str, *, doing: str = "write to") -> None:
        super().__init__(f"journeyd cannot {doing} {place}: {problem}; {remedy}")
        self.place, self.problem, self.doing = str(place), problem, doing


# the remedies a StorageUnavailable gives, by kind of trouble
NO_SPACE = "free some space and it recovers by itself"
READ_ONLY = "make it writable and it recovers by itself"
FAILING = "check the disk; journeyd retries by itself"
UNREACHABLE = "check that the server is up and reachable; journeyd retries by itself"


class TaskCancelled(Exception):
    """Raised inside a running engine call when its task was cancelled; not a client error."""
