"""One hub repository's files into the Hugging Face cache, each resuming from the byte an earlier pull reached.

huggingface_hub (2.x) downloads a file to a temporary name unique to its process and deletes it when the
download fails, so a pull cut off by Ctrl-C or a killed process would fetch that file again from its first
byte. Here a file goes to `blobs/<etag>.incomplete`, a name that outlives the process, and the next pull
asks for the rest with `Range: bytes=<have>-`. The bytes still travel through huggingface_hub's own
`http_get` (its auth headers, its retries of a connection dropped within one run, its progress bar, here
starting at the resumed offset), and the result is the cache's standard layout, as `hf_hub_download` writes
it, so diffusers and huggingface_hub read it as their own:

- `blobs/<etag>`: the file, checked against its size, and against its sha256 where the etag is one (LFS files);
- `snapshots/<commit>/<path>`: a relative symlink to the blob;
- `refs/main`: the commit, written once every file of it is in place;
- `.locks/<repo folder>/<etag>.lock`: huggingface_hub's lock, so a second pull of the file (ours or its) waits.

The files come one after the other over plain HTTP (no Xet, which cannot resume): a big file is one stream.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

REVISION = "main"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PARTIAL = ".incomplete"


class CorruptDownload(OSError):
    """A downloaded file whose bytes are not the ones the hub names."""


def fetch_repo(repo_id: str, patterns: Sequence[str], cache: Path, endpoint: str | None, bar: type) -> None:
    """Download the files of `repo_id` at `main` that match `patterns` into `cache`, skipping those there
    already and resuming those an earlier pull left part of. Raises huggingface_hub's errors as they come."""
    from huggingface_hub import HfApi
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import filter_repo_objects

    info = HfApi(endpoint=endpoint).model_info(repo_id, revision=REVISION)
    if info.sha is None:
        raise CorruptDownload(f"the hub gave no commit for {repo_id} at {REVISION}")
    names = [sibling.rfilename for sibling in info.siblings or []]
    storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    locks = cache / ".locks" / storage.name
    locks.mkdir(parents=True, exist_ok=True)
    for name in filter_repo_objects(names, allow_patterns=list(patterns)):
        _fetch_file(repo_id, name, info.sha, storage, locks, endpoint, bar)
    _write_ref(storage, info.sha)
    _discard_leftovers(storage / "blobs", locks)


def _fetch_file(
    repo_id: str, name: str, commit: str, storage: Path, locks: Path, endpoint: str | None, bar: type
) -> None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import WeakFileLock

    pointer = storage / "snapshots" / commit / name
    if pointer.exists():  # complete already: not even a HEAD
        return
    url = hf_hub_url(repo_id, name, revision=commit, endpoint=endpoint)  # by commit: every file of one version
    metadata = get_hf_file_metadata(url, endpoint=endpoint)
    if metadata.etag is None:
        raise CorruptDownload(f"{url} answers without an ETag: HF_ENDPOINT does not look like a Hugging Face hub")
    blob = storage / "blobs" / metadata.etag
    blob.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(locks / f"{metadata.etag}.lock"):
        if not blob.exists():  # another pull may have finished it while this one waited
            _fetch_blob(url, blob, metadata.size, name, bar)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.unlink(missing_ok=True)  # a link to a blob that is gone
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))


def _fetch_blob(url: str, blob: Path, size: int | None, name: str, bar: type) -> None:
    """`blob` from `url`, by way of `<blob>.incomplete`: kept when the download stops, resumed when it is there."""
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    partial = blob.with_name(blob.name + _PARTIAL)
    have = partial.stat().st_size if partial.exists() else 0
    if size is not None and have > size:  # cannot be the start of this file
        partial.unlink()
        have = 0
    with partial.open("ab") as file:
        http_get(
            url,
            file,
            resume_size=have,
            headers=build_hf_headers(),
            expected_size=size,
            displayed_filename=name,
            tqdm_class=bar,
        )
    if _intact(partial, blob.name):
        os.replace(partial, blob)
        return
    partial.unlink()
    if not have:
        raise CorruptDownload(f"{name} arrived with another checksum than the hub's ({blob.name}): pull again")
    _fetch_blob(url, blob, size, name, bar)  # the bytes an earlier pull left were not this file's start: all again


def _intact(path: Path, etag: str) -> bool:
    """Whether `path` hashes to `etag`, where that is a sha256 (an LFS file's); a file kept in git has its git
    hash as its etag instead, and `http_get` has checked its size."""
    if not _SHA256.fullmatch(etag):
        return True
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest() == etag


def _write_ref(storage: Path, commit: str) -> None:
    ref = storage / "refs" / REVISION
    if ref.is_file() and ref.read_text() == commit:
        return
    ref.parent.mkdir(parents=True, exist_ok=True)
    staged = ref.with_name(f".{ref.name}.{os.getpid()}")
    staged.write_text(commit)
    os.replace(staged, ref)  # a reader never sees a half-written ref


def _discard_leftovers(blobs: Path, locks: Path) -> None:
    """With every file of the revision in place, a `<etag>.incomplete` still here is the start of a file the
    hub no longer serves at `main` (it changed since): nothing will resume it. One another pull is writing
    (its lock is held) stays."""
    from filelock import FileLock, Timeout

    for partial in blobs.glob(f"*{_PARTIAL}"):
        etag = partial.name.removesuffix(_PARTIAL)
        if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", etag):  # not one of ours (huggingface_hub's have a uuid)
            continue
        try:
            with FileLock(locks / f"{etag}.lock", timeout=0):
                partial.unlink(missing_ok=True)
        except Timeout:
            continue
