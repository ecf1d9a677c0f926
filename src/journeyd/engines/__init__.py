"""Engines: pixels in, pixels out. `load_engines` builds the configured one (once per device);
`load_prompt_rules` reads only what it accepts, for a node that draws nothing."""

from __future__ import annotations

from journeyd.config import Settings
from journeyd.engines.base import Engine, PromptRules

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


def load_prompt_rules(settings: Settings) -> PromptRules:
    """What the configured engine accepts, without loading it: an API node checks submits with these,
    and its workers, loading the same settings, accept the same prompts. The diffusers engine's rules
    come from its profiles alone: no model is read, and no torch imported."""
    if settings.engine == "diffusers":
        from journeyd.engines.diffusion.profiles import ProfileRules, load_versions

        return ProfileRules(load_versions(settings.model, settings.models))
    return load_engines(settings)[0]  # classic: no weights, so the engine is its own rules (an unknown one is refused)
