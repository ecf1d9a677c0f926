"""The diffusers engine: open diffusion models doing Midjourney's actions."""

from journeyd.engines.diffusion.engine import DiffusionEngine
from journeyd.engines.diffusion.loading import LoadedModel, ModelLoadError, load_model, share_weights
from journeyd.engines.diffusion.profiles import Profile, ProfileError, load_profiles

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
