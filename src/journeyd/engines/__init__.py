"""Engines: pixels in, pixels out. `choose_engine` settles what `auto` means on this machine;
`load_engines` builds the configured one (once per device); `load_prompt_rules` reads only what it
accepts, for a node that draws nothing."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from journeyd.config import Settings
from journeyd.engines.base import Engine, PromptRules

ENGINES = ("auto", "classic", "diffusers", "paced")
FIRST_MODEL = "sd-turbo"  # the catalog model a newcomer is told to pull: small, and fine on a CPU


@dataclass(frozen=True)
class EngineChoice:
    settings: Settings  # engine "classic" or "diffusers" (and, for a model auto found, that model)
    note: str | None = None  # for the start-up banner: what auto chose, and why


def choose_engine(settings: Settings) -> EngineChoice:
    """`auto` made concrete: the diffusers engine when torch and diffusers are installed and a model is
    named (`--model`, `--models`) or a catalog model is in the Hugging Face cache (the first, in the
    catalog's order); else the classic engine, with a note naming the command that gets real pictures.
    Other engines are kept as they are."""
    if settings.engine != "auto":
        return EngineChoice(settings)
    installed = all(importlib.util.find_spec(name) is not None for name in ("torch", "diffusers"))
    if settings.model or settings.models:
        if not installed:
            raise ValueError(
                "a model needs the diffusers engine's libraries, torch and diffusers: "
                "`EXTRAS=diffusers ./scripts/serve` installs them"
            )
        return EngineChoice(settings.model_copy(update={"engine": "diffusers"}))
    if installed:
        from journeyd.models.hub import first_cached

        if (entry := first_cached()) is not None:
            return EngineChoice(
                settings.model_copy(update={"engine": "diffusers", "model": entry.name}),
                f"serving {entry.name}, the first catalog model in the Hugging Face cache (--model NAME picks another)",
            )
    then = "start again" if installed else "`EXTRAS=diffusers ./scripts/serve` (torch and diffusers)"
    return EngineChoice(
        settings.model_copy(update={"engine": "classic"}),
        f"classic engine: procedural pictures, no neural model; for real pictures: `journeyd models pull "
        f"{FIRST_MODEL}`, then {then}",
    )


def load_engines(settings: Settings) -> list[Engine]:
    """Build the configured engine now, so a broken configuration fails at start-up: one, or for the
    diffusers engine one per device it is given (each GPU holds its own copy of the models)."""
    settings = choose_engine(settings).settings
    if settings.engine == "classic":
        from journeyd.engines.classic import ClassicEngine

        return [ClassicEngine(base_size=settings.classic_size, step_delay_s=settings.classic_step_s)]
    if settings.engine == "paced":
        from journeyd.engines.paced import PacedEngine

        return [PacedEngine(settings.paced_task_ms / 1000, base_size=settings.classic_size)]
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
    settings = choose_engine(settings).settings
    if settings.engine == "diffusers":
        from journeyd.engines.diffusion.profiles import ProfileRules, load_versions

        return ProfileRules(load_versions(settings.model, settings.models))
    return load_engines(settings)[
        0
    ]  # classic, paced: no weights, so the engine is its own rules (an unknown one is refused)
