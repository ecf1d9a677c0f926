"""/readyz: can this server take work now? `/healthz` only says the process answers.

Each check does the real thing, cheaply: the database commits a write (synced, when durable), the
image store takes a probe write (a folder, with room to spare; S3, a PUT and a DELETE in the bucket),
and the engines are loaded (they are at start-up, or the server does not start; an API node loads
none, and says so with `loaded: false`). A failing check
gives the reason a person can act on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from journeyd.domain.errors import StorageUnavailable
from journeyd.runtime import Runtime


class Check(BaseModel):
    model_config = ConfigDict(extra="allow")  # what a check measured: free_mib, the engine's name
    ok: bool
    reason: str | None = Field(None, description="Why not, when not ok")


class Readiness(BaseModel):
    ready: bool
    reason: str | None = Field(None, description="The first failing check's reason, when not ready")
    checks: dict[str, Check] = Field(..., description="database, images and engine")


def _check(probe: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
    try:
        details = probe() or {}
    except StorageUnavailable as error:
        return {"ok": False, "reason": error.message}
    return {"ok": True, **details}


def readiness(runtime: Runtime) -> dict[str, Any]:
    """{"ready": bool, "reason": the first failing check's (when not ready), "checks": {name: {"ok", ...}}}."""
    checks = {
        "database": _check(runtime.store.check_writable),
        "images": _check(runtime.images.check),
        # an API node checks prompts against its configuration and loads no engine: nothing to wait for
        "engine": {"ok": True, "name": runtime.rules.name, "loaded": runtime.loaded, "devices": len(runtime.engines)},
    }
    failing = [check["reason"] for check in checks.values() if not check["ok"]]
    return {"ready": not failing, **({"reason": failing[0]} if failing else {}), "checks": checks}
