"""The OpenAPI document is a product surface: every operation lists what it answers, and only that.

Each dialect passes `documented(...)` to its routes: the success model and the error statuses that
route can send, all in the dialect's own error envelope. `finish(app)` then declares the key
schemes and drops FastAPI's stock 422 "Validation Error", a shape journeyd never sends (a request
that fails validation is a 400 in the dialect's envelope), and the empty 200 it adds to endpoints that
never succeed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

STATUS_MEANINGS = {
    400: "The request is malformed: bad JSON, a wrong type, a value out of range, an unknown Host name",
    401: "No API key, or one journeyd does not know (once any key exists, every request needs one)",
    402: "The key's credits do not cover the price",
    403: "The key is revoked; or no key exists yet and the request is not from loopback; or a page of "
    "another origin called without a key",
    404: "No such task (or one that belongs to another key)",
    405: "The endpoint does not take this method",
    408: "The request body did not arrive in time",
    409: "The task is not in a state that allows this (yet)",
    413: "The body or an image in it is too large",
    422: "The content cannot be used: a mask that is not an image or selects nothing, a URL that cannot be "
    "fetched, an Idempotency-Key reused for another request",
    429: "The key already has its maximum of tasks queued or running",
    503: "journeyd cannot use its storage (disk full or read-only, S3 server unreachable); it recovers by itself",
}
READ = (400, 401, 403, 404)
LIST = (400, 401, 403)
SUBMIT = (400, 401, 402, 403, 404, 408, 409, 413, 422, 429, 503)
CHANGE = (400, 401, 403, 404, 408, 409, 413, 503)

# An 8x8 mask (white square on black) that links hand to Vary (Region)'s modal in the document.
EXAMPLE_MASK = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAG0lEQVR42mNgQAeMDAz/"
    "GRgYGBmYYCKYDEwAADRSAQiRgurpAAAAAElFTkSuQmCC"
)
SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A key from `journeyd keys create` (a bare `Authorization: <key>` works too)",
    },
    "mjApiSecret": {"type": "apiKey", "in": "header", "name": "mj-api-secret", "description": "midjourney-proxy"},
}
SECURITY = [{"bearer": []}, {"mjApiSecret": []}]


def documented(
    ok: type[BaseModel] | Any,
    error: type[BaseModel],
    statuses: Iterable[int],
    *,
    ok_description: str = "Done",
    links: dict[str, Any] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=`: `ok` for 200 (a model, or a list of one; None: never succeeds), `error` for
    each status."""
    responses: dict[int | str, dict[str, Any]] = {}
    if ok is not None:
        responses[200] = {"model": ok, "description": ok_description, **({"links": links} if links else {})}
    return responses | {status: {"model": error, "description": STATUS_MEANINGS[status]} for status in statuses}


def link(operation_id: str, description: str, **values: Any) -> dict[str, Any]:
    """An OpenAPI link from a response to `operation_id`: parameters, or body fields named `body_<field>`;
    a value is a runtime expression (`$response.body#/result`) or a constant."""
    body = {key.removeprefix("body_"): value for key, value in values.items() if key.startswith("body_")}
    parameters = {key: value for key, value in values.items() if not key.startswith("body_")}
    result: dict[str, Any] = {"operationId": operation_id, "description": description}
    if parameters:
        result["parameters"] = parameters
    if body:
        result["requestBody"] = body
    return result


def finish(app: FastAPI, *, public: Iterable[str], key_beyond_loopback: Iterable[str] = ()) -> None:
    """Give `app` its finished document; `public` are the path prefixes anyone may call without a key,
    `key_beyond_loopback` those that need one only from another machine."""
    public, loopback_free = tuple(public), tuple(key_beyond_loopback)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            for path, operations in document.get("paths", {}).items():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    stock = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
                    if stock.get("$ref", "").endswith("/HTTPValidationError"):
                        del responses["422"]
                    content = responses.get("200", {}).get("content", {})
                    if content.get("application/json") == {"schema": {}}:  # FastAPI's filler, never sent
                        del content["application/json"]
                        if not content:
                            del responses["200"]
                    if path.startswith(loopback_free):
                        operation["security"] = [*SECURITY, {}]
                    elif not path.startswith(public):
                        operation["security"] = SECURITY
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            document["components"]["securitySchemes"] = SECURITY_SCHEMES
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
