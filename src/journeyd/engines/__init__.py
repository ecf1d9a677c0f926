"""Engines: pixels in, pixels out. `load_engines` builds the configured one (once per device)."""

from __future__ import annotations

from journeyd.config import Settings
from journeyd.engines.base import Engine

ENGINES = ("classic", "diffusers")


def load_engines(settings: Settings) -> list[Engine]:
    """Build the configured engine now, so a broken configuration fails at start-up: one, or for the
    diffusers engine one per device it is given (each GPU holds its own copy of the models)."""
    if settings.engine == "classic":
        from journeyd.engines.classic import ClassicEngine

        return [ClassicEngine(base_size=settings.classic_size, step_delay_s=settings.classic_step_s)]
    if settings.engine == "diffusers":
        from journeyd.engines.diffusion import DiffusionEngine, load_profiles
        from journeyd.engines.diffusion.loading import devices_of, pick_device

        profiles = load_profiles(settings.model, settings.models, settings.model_family)
        devices = devices_of(settings.device)
        for device in devices:  # every device checked before any model loads
            pick_device(device, settings.dtype)
        return [
            DiffusionEngine.load(profiles, device=device, speedups=settings.speedups, dtype=settings.dtype)
            for device in devices
        ]
    raise ValueError(f"unknown engine {settings.engine!r}; choose one of: {', '.join(ENGINES)}")
