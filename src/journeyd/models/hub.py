"""The catalog's models in the local Hugging Face cache: which are there, and pulling one into it.

The cache is huggingface_hub's own (`HF_HUB_CACHE`, else `HF_HOME/hub`, else ~/.cache/huggingface/hub),
so a model pulled here is the one diffusers loads by its hub id, and one pulled by other tools counts.
A pull fetches the catalog's exact files (`download.py`): every finished file is kept, and the file it was
fetching when it was cut off (Ctrl-C, a killed process, a dropped connection) resumes from the byte it reached.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from journeyd.models.catalog import CATALOG, GB, Entry, Repo, find, human, profile_table
from journeyd.models.download import fetch_repo

SPARE = GB  # free space left over after a pull, beyond the download itself (or 5% of it, if that is more)
BYTES_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}B/{total_fmt}B [{elapsed}<{remaining}, {rate_fmt}]"


class PullFailed(RuntimeError):
    """A pull that could not be done; the message is one line saying why and what to do."""


def hub_cache(cache_dir: str | Path | None = None) -> Path:
    """The cache in use: `cache_dir` if given, else huggingface_hub's (which honours HF_HUB_CACHE and HF_HOME)."""
    if cache_dir is not None:
        return Path(cache_dir)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def is_cached(repo: Repo, cache_dir: str | Path | None = None) -> bool:
    """Whether every file journeyd needs of `repo` is in the cache, at the revision `main` points to."""
    return not missing_files(repo, cache_dir)


def missing_files(repo: Repo, cache_dir: str | Path | None = None) -> list[str]:
    from huggingface_hub import try_to_load_from_cache

    cache = str(hub_cache(cache_dir))
    return [name for name in repo.needed if not isinstance(try_to_load_from_cache(repo.id, name, cache_dir=cache), str)]


def cache_state(entry: Entry, cache_dir: str | Path | None = None) -> str:
    """`yes`, `no`, or `without inpainting` (the model is there, its inpainting model is not)."""
    if not is_cached(entry.model, cache_dir):
        return "no"
    if entry.inpaint is not None and not is_cached(entry.inpaint, cache_dir):
        return "without inpainting"
    return "yes"


def first_cached(cache_dir: str | Path | None = None) -> Entry | None:
    """The first catalog model (in the catalog's order) whose model is in the cache: what `auto` serves."""
    return next((entry for entry in CATALOG if is_cached(entry.model, cache_dir)), None)


def profile_for(model: str, cache_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The profile settings a `--model` value stands for if it is a catalog name (None if it is not: a hub
    id, a folder or a file; a file or folder of that name wins). The one place a name becomes its hub id,
    with its inpainting model where that is in the cache."""
    entry = find(model)
    if entry is None or Path(model).exists():
        return None
    with_inpaint = entry.inpaint is not None and is_cached(entry.inpaint, cache_dir)
    return profile_table(entry, with_inpaint=with_inpaint)


def disk_free(path: Path) -> int:
    """Free bytes on the disk that holds `path` (or would: the nearest folder above it that exists)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def pull(
    entry: Entry,
    *,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    free_bytes: Callable[[Path], int] = disk_free,
) -> list[Repo]:
    """Download what of `entry` is not in the cache yet; the repositories it downloaded. The disk is
    checked first, and nothing is fetched unless all of it fits."""
    cache = hub_cache(cache_dir)
    missing = [repo for repo in entry.repos if not is_cached(repo, cache)]
    need = sum(repo.size for repo in missing)
    if missing and (free := free_bytes(cache)) < need + max(SPARE, need // 20):
        raise PullFailed(
            f"{entry.name} needs {human(need)} and {human(max(SPARE, need // 20))} to spare in {cache}, which has "
            f"{human(free)} free: free some space, or set HF_HUB_CACHE to a folder on a bigger disk"
        )
    for repo in missing:
        try:
            _download(repo, cache, endpoint)
        except PullFailed as error:
            if repo is entry.inpaint:
                raise PullFailed(f"{error}; {entry.name} itself is downloaded, and serves without it") from error
            raise
    return missing


def _download(repo: Repo, cache: Path, endpoint: str | None) -> None:
    import httpx2  # huggingface_hub's HTTP client, whose errors its calls raise
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    try:
        fetch_repo(repo.id, repo.patterns, cache, endpoint, _bar_class())
    except (GatedRepoError, RepositoryNotFoundError) as error:  # the hub says "not found" to a stranger, too
        raise PullFailed(
            f"{repo.id} is gated: accept its terms at {repo.url} while signed in, then log in here with "
            "`hf auth login` (or set HF_TOKEN to a token of that account) and pull again"
            if isinstance(error, GatedRepoError) or repo.gated
            else f"{repo.id}: the hub shows no such repository to this login ({_first_line(error)})"
        ) from error
    except OfflineModeIsEnabled as error:
        raise PullFailed(f"HF_HUB_OFFLINE is set, so {repo.id} cannot be downloaded: unset it") from error
    except httpx2.TransportError as error:  # the hub could not be reached, or stopped answering
        raise PullFailed(
            f"could not reach the hub at {endpoint or constants.ENDPOINT} for {repo.id} ({type(error).__name__}: "
            f"{_first_line(error)}): check the network, or set HF_ENDPOINT to a mirror"
        ) from error
    except (HfHubHTTPError, OSError) as error:
        raise PullFailed(f"could not download {repo.id}: {_first_line(error)}") from error
    if lacking := missing_files(repo, cache):
        raise PullFailed(f"{repo.id} on the hub lacks {', '.join(lacking)}: this journeyd's catalog is out of date")


def _bar_class() -> type:
    """huggingface_hub's progress bars, with the size, speed and time left on the bytes bar (its own
    shows the size alone when the files come over plain HTTP)."""
    from huggingface_hub.utils import tqdm as hub_tqdm

    class Bar(hub_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("unit") == "B":
                kwargs["bar_format"] = BYTES_BAR
            super().__init__(*args, **kwargs)

    return Bar


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
