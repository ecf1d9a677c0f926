"""The diffusers engine: open diffusion models doing Midjourney's actions.

`profiles` (which model draws which version) imports no torch, so an API node of a fleet reads its
configuration without the engine's libraries; the engine and its loading code are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from journeyd.engines.diffusion.profiles import Profile, ProfileError, load_profiles

if TYPE_CHECKING:
    from journeyd.engines.diffusion.engine import DiffusionEngine
    from journeyd.engines.diffusion.loading import LoadedModel, ModelLoadError, load_model, share_weights

_LAZY = {
    "DiffusionEngine": "engine",
    "LoadedModel": "loading",
    "ModelLoadError": "loading",
    "load_model": "loading",
    "share_weights": "loading",
}

__all__ = [
    "DiffusionEngine",
    "LoadedModel",
    "ModelLoadError",
    "Profile",
    "ProfileError",
    "load_model",
    "load_profiles",
    "share_weights",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
