"""Engines: pixels in, pixels out. `load_engine` picks one by its configured name."""

from __future__ import annotations

from journeyd.config import Settings
from journeyd.engines.base import Engine

ENGINES = ("classic", "diffusers")


def load_engine(settings: Settings) -> Engine:
    """Build the configured engine now, so a broken configuration fails at start-up."""
    if settings.engine == "classic":
        from journeyd.engines.classic import ClassicEngine

        return ClassicEngine(base_size=settings.classic_size)
    if settings.engine == "diffusers":
        from journeyd.engines.diffusion import DiffusionEngine, load_profiles

        return DiffusionEngine.load(
            load_profiles(settings.model, settings.models, settings.model_family),
            device=settings.device,
            speedups=settings.speedups,
            dtype=settings.dtype,
        )
    raise ValueError(f"unknown engine {settings.engine!r}; choose one of: {', '.join(ENGINES)}")
