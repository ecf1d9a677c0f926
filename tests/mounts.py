"""Small real filesystems for storage-trouble tests: tmpfs mounts to fill up or make read-only.

As root the mounts are made here directly. Otherwise a process holds a user and mount namespace of
its own (`unshare --user --map-root-user --mount`), the mounts are made in it, servers and commands
run in it (`prefix`), and this process reaches the files through `/proc/<holder>/root` (`path`).
Where neither works, `start` skips the test and says why.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

CHUNKS = (1 << 20, 4096, 1)  # filling: big writes first, then the last page byte by byte


class Mounts:
    def __init__(self, holder: subprocess.Popen[bytes] | None) -> None:
        self.holder = holder
        self.prefix: list[str] = (
            ["nsenter", "--preserve-credentials", "-t", str(holder.pid), "-U", "-m", "--"] if holder else []
        )
        self._mounted: list[Path] = []

    @classmethod
    def start(cls) -> Mounts:
        """Mounts in this process's namespace when root, else in a namespace of their own."""
        if os.geteuid() == 0 and os.environ.get("JOURNEYD_TEST_MOUNTS") != "namespace":
            return cls(None)
        if not (shutil.which("unshare") and shutil.which("nsenter")):
            pytest.skip("storage-trouble tests need root, or unshare and nsenter (util-linux) to mount a tmpfs")
        holder = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--mount", "sleep", "infinity"], stderr=subprocess.PIPE
        )
        mounts = cls(holder)
        own = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 10
        while holder.poll() is None and time.monotonic() < deadline:
            try:
                if os.readlink(f"/proc/{holder.pid}/ns/mnt") != own:
                    return mounts
            except OSError:
                pass
            time.sleep(0.01)
        reason = holder.stderr.read().decode().strip() if holder.poll() is not None and holder.stderr else "timeout"
        mounts.close()
        pytest.skip(f"storage-trouble tests need root or unprivileged user namespaces: unshare failed ({reason})")

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self.prefix, *command], capture_output=True, text=True)
        if done.returncode:
            self.close()
            pytest.skip(f"cannot mount here ({' '.join(command)}: {done.stderr.strip()})")

    def need_this_process(self) -> None:
        """Skip unless the mounts are in this process's namespace: SQLite resolves `/proc/<pid>/root`
        to the path outside, so an in-process database cannot be reached through it."""
        if self.holder is not None:
            pytest.skip("this test opens the database in the test process, which needs root to mount")

    def path(self, path: Path) -> Path:
        """Where this process reaches `path` as the mounts' namespace sees it."""
        return Path(f"/proc/{self.holder.pid}/root{path}") if self.holder else path

    def tmpfs(self, path: Path, size_mb: int) -> Path:
        self.path(path).mkdir(parents=True, exist_ok=True)
        self._run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path))
        self._mounted.append(path)
        return path

    def read_only(self, path: Path) -> None:
        """Make the mount at `path` read-only (a read-only bind mount over it, as a user namespace allows)."""
        self._run("mount", "--bind", str(path), str(path))
        self._mounted.append(path)
        self._run("mount", "-o", "remount,bind,ro", str(path))

    def fill(self, path: Path, *, leave: int = 0) -> Path:
        """Fill the filesystem at `path` until `leave` bytes are free (0: until it refuses a single byte).
        Delete the returned file to free the space again."""
        filler = self.path(path) / ".filler"
        stat = os.statvfs(self.path(path))
        todo = max(0, stat.f_bavail * stat.f_frsize - leave) if leave else None
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in CHUNKS:
                while todo is None or todo >= chunk:
                    try:
                        os.write(fd, b"\0" * chunk)
                    except OSError as error:
                        if error.errno != errno.ENOSPC:
                            raise
                        break
                    if todo is not None:
                        todo -= chunk
        finally:
            os.close(fd)
        return filler

    def close(self) -> None:
        """Unmount everything, newest first (lazily if something still holds it open)."""
        if self.holder is not None:
            self.holder.kill()  # the namespace, and its mounts, go with its last process
            self.holder.wait(10)
            return
        for path in reversed(self._mounted):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(path)], capture_output=True)
        self._mounted.clear()
