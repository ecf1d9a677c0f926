"""Where images live: a folder under the data dir, behind a small protocol so S3 can follow.

Keys look like `<task id>/<name>.png`. Writes go to a temporary file first and are renamed into
place, so a crash of the process never leaves half an image behind a URL. (No fsync: like the
database with synchronous=NORMAL, we survive the process dying, not the machine losing power.)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"^[0-9A-Z]{26}/[a-z0-9_-]{1,32}\.(png|webp|jpg)$")


class ImageStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def path(self, key: str) -> Path | None: ...
    def delete(self, key: str) -> None: ...
    def delete_task(self, task_id: str) -> None: ...


def valid_key(key: str) -> bool:
    return bool(_KEY.match(key))


class LocalImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _file(self, key: str) -> Path:
        if not valid_key(key):
            raise ValueError(f"bad image key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        target = self._file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        return self._file(key).read_bytes()

    def path(self, key: str) -> Path | None:
        if not valid_key(key):
            return None
        file = self.root / key
        return file if file.is_file() else None

    def delete(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)

    def delete_task(self, task_id: str) -> None:
        shutil.rmtree(self.root / task_id, ignore_errors=True)
