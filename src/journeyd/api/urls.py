"""Absolute URLs for stored images."""

from __future__ import annotations

from starlette.requests import Request


def image_base(request: Request) -> str:
    """Where image keys hang from: the configured public URL if there is one, else the address the
    client used to reach us. `f"{image_base(request)}/{key}"` is an image's URL.

    Built from the scope directly: Starlette's `request.base_url` parses a whole URL per call, and
    this runs on every poll."""
    base = request.app.state.public_url
    if base is None:
        scope = request.scope
        host = request.headers.get("host")
        if host is None:
            server_host, port = scope.get("server") or ("127.0.0.1", 80)
            host = f"{server_host}:{port}"
        base = f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}"
    return f"{base}/images"
