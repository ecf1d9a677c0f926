"""Where images live: the ImageStore port, and its local adapter, a folder under the data dir
(`media/s3.py` is the other; `media/stores.py` picks one from a URL).

Keys look like `<task id>/<name>.png`. Writes go to a temporary file first and are renamed into
place, so a crash of the process never leaves half an image behind a URL. Durable (the default),
the file is fsynced before the rename and its directory after it, so an image is on the disk before
`put` returns: the worker saves a task's images before the row that names them commits, and a
power cut cannot leave a success row pointing at a truncated image. Not durable (`fast`), a put
survives the process dying but not the machine losing power.

A write the disk refuses (full, read-only, failing) is a StorageUnavailable naming the folder.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from journeyd.domain.errors import FAILING, NO_SPACE, READ_ONLY, StorageUnavailable

_TASK_ID = r"[0-9A-Z]{26}"
_KEY = re.compile(rf"^{_TASK_ID}/[a-z0-9_-]{{1,32}}\.(png|webp|jpg)$")
MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "jpg": "image/jpeg"}
_REMEDIES = {
    errno.ENOSPC: NO_SPACE,
    errno.EDQUOT: NO_SPACE,
    errno.EROFS: READ_ONLY,
    errno.EACCES: READ_ONLY,
    errno.EIO: FAILING,
}
MIB = 1024 * 1024


StoredImage = Path | bytes
"""An image to serve: a local file (sent with sendfile, never read into memory) or its bytes."""


class ImageStore(Protocol):
    """Images by key. A key that `valid_key` refuses is a ValueError everywhere but `open`; trouble
    with the storage itself (disk, network, server) is a StorageUnavailable naming the place."""

    def put(self, key: str, data: bytes) -> None:
        """Store one image, replacing any under that key; once it returns, the image is kept."""
        ...

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Store several images (a task's results). Each one lands whole or not at all."""
        ...

    def get(self, key: str) -> bytes:
        """The image's bytes; FileNotFoundError when there is none."""
        ...

    def open(self, key: str) -> StoredImage | None:
        """The image ready to serve, or None for a missing image or a bad key (a URL anyone may type)."""
        ...

    def delete(self, key: str) -> None:
        """Remove one image; a missing one is fine."""
        ...

    def delete_task(self, task_id: str) -> None:
        """Remove every image of one task, and nothing of any other."""
        ...

    def check(self) -> dict[str, object]:
        """Readiness: a write and a delete go through now. Returns what it measured."""
        ...


def valid_key(key: str) -> bool:
    return bool(_KEY.match(key))


def valid_task_id(task_id: str) -> bool:
    return bool(re.fullmatch(_TASK_ID, task_id))


def media_type(key: str) -> str:
    return MEDIA_TYPES[key.rsplit(".", 1)[-1]]


@contextmanager
def storage_errors(place: Path) -> Iterator[None]:
    """OS errors that mean the disk is in trouble become StorageUnavailable; any other stays itself."""
    try:
        yield
    except OSError as error:
        remedy = _REMEDIES.get(error.errno or 0)
        if remedy is None:
            raise
        raise StorageUnavailable(place, os.strerror(error.errno or 0).lower(), remedy) from error


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dir(directory: Path, *, durable: bool) -> None:
    """Make `directory` if it is missing; durable, its entry in the parent is on the disk too."""
    if directory.is_dir():
        return
    directory.mkdir(parents=True, exist_ok=True)
    if durable:
        _fsync_dir(directory.parent)


def check_writable(directory: Path, *, durable: bool = True) -> None:
    """Make `directory` if needed, then write, fsync and delete a probe file in it: a
    StorageUnavailable naming the folder if the disk refuses."""
    with storage_errors(directory):
        _make_dir(directory, durable=durable)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".probe-")
        try:
            os.write(fd, b"journeyd")
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)


class LocalImageStore:
    def __init__(self, root: Path, *, durable: bool = True, min_free_bytes: int = 64 * MIB) -> None:
        self.root, self.durable, self.min_free_bytes = root, durable, min_free_bytes
        with storage_errors(root):
            _make_dir(root, durable=durable)

    def _file(self, key: str) -> Path:
        if not valid_key(key):
            raise ValueError(f"bad image key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        self.put_many([(key, data)])

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Write images; durable, each file is synced before its rename and each folder once after
        them all (one journal commit for a task's five images, not five)."""
        targets = [(self._file(key), data) for key, data in items]
        with storage_errors(self.root):
            folders = dict.fromkeys(target.parent for target, _ in targets)
            for folder in folders:
                _make_dir(folder, durable=self.durable)
            for target, data in targets:
                fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
                try:
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(data)
                        if self.durable:
                            handle.flush()
                            os.fsync(handle.fileno())
                    os.replace(temp, target)
                except BaseException:
                    Path(temp).unlink(missing_ok=True)
                    raise
            if self.durable:  # the renames themselves
                for folder in folders:
                    _fsync_dir(folder)

    def get(self, key: str) -> bytes:
        file = self._file(key)
        with storage_errors(self.root):
            return file.read_bytes()

    def open(self, key: str) -> StoredImage | None:
        if not valid_key(key):
            return None
        file = self.root / key
        return file if file.is_file() else None

    def delete(self, key: str) -> None:
        file = self._file(key)
        with storage_errors(self.root):
            file.unlink(missing_ok=True)

    def delete_task(self, task_id: str) -> None:
        if not valid_task_id(task_id):  # rmtree on "../x" must never happen
            raise ValueError(f"bad task id {task_id!r}")
        shutil.rmtree(self.root / task_id, ignore_errors=True)

    def check(self) -> dict[str, object]:
        """Readiness: enough free space, and a probe file can be written, fsynced and deleted."""
        with storage_errors(self.root):
            free = shutil.disk_usage(self.root).free
        if free < self.min_free_bytes:
            raise StorageUnavailable(
                self.root,
                f"only {free / MIB:.1f} MiB free, below the {self.min_free_bytes / MIB:.0f} MiB journeyd keeps",
                NO_SPACE,
            )
        check_writable(self.root, durable=self.durable)
        return {"free_mib": round(free / MIB, 1)}
