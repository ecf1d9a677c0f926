"""Durable by default: every commit is synced, and an image is on the disk before the row naming it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from journeyd.media.storage import LocalImageStore
from journeyd.runtime import build_runtime
from tests.conftest import make_settings

FULL, NORMAL = 2, 1  # what PRAGMA synchronous reports
TASK = "01KV52C0TEJSYZMCG0NCS4YWKK"


def synchronous_seen_by_each_thread(store) -> list[int]:  # type: ignore[no-untyped-def]
    """PRAGMA synchronous on this thread's connection and on a new thread's (each thread has its own)."""
    seen = [store._conn().execute("PRAGMA synchronous").fetchone()[0]]
    thread = threading.Thread(target=lambda: seen.append(store._conn().execute("PRAGMA synchronous").fetchone()[0]))
    thread.start()
    thread.join()
    return seen


@pytest.mark.parametrize(("durability", "expected"), [(None, FULL), ("full", FULL), ("fast", NORMAL)])
def test_every_database_connection_syncs_each_commit_unless_fast(
    tmp_path: Path, durability: str | None, expected: int
) -> None:
    settings = make_settings(tmp_path, **({"durability": durability} if durability else {}))
    runtime = build_runtime(settings)
    try:
        assert synchronous_seen_by_each_thread(runtime.store) == [expected, expected]
        assert runtime.images.durable is (expected == FULL)
    finally:
        runtime.store.close()


class FsyncSpy:
    """Records what each os.fsync call syncs (the path behind the descriptor) and whether the
    image being put was already in place then; the real fsync still runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
        self.calls: list[tuple[str, bool]] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            self.calls.append((os.readlink(f"/proc/self/fd/{fd}"), target.exists()))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


def test_put_syncs_the_file_then_renames_then_syncs_its_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalImageStore(tmp_path / "images")
    first, second = tmp_path / "images" / TASK / "0.png", tmp_path / "images" / TASK / "1.png"

    spy = FsyncSpy(monkeypatch, first)
    store.put(f"{TASK}/0.png", b"first image")
    synced = [(Path(path), in_place) for path, in_place in spy.calls]
    files = [i for i, (path, in_place) in enumerate(synced) if path.name.startswith(".tmp-") and not in_place]
    assert len(files) == 1 and synced[files[0]][0].parent == first.parent  # the data, before the rename
    assert synced[-1] == (first.parent, True)  # then the rename: the folder's new entry
    assert (tmp_path / "images", False) in synced  # the task's folder was new: its entry in the images folder
    assert len(synced) == 3 and first.read_bytes() == b"first image"

    spy = FsyncSpy(monkeypatch, second)
    store.put(f"{TASK}/1.png", b"second image")
    (file, file_in_place), (folder, in_place) = spy.calls  # the folder already existed: file and folder only
    assert Path(file).parent == second.parent and not file_in_place
    assert (Path(folder), in_place) == (second.parent, True)


def test_a_tasks_images_are_each_synced_and_their_folder_once_after_all_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalImageStore(tmp_path / "images")
    folder = tmp_path / "images" / TASK
    store.put(f"{TASK}/input-0.png", b"an image prompt")  # the folder exists already
    spy = FsyncSpy(monkeypatch, folder / "grid.png")  # the last one renamed
    store.put_many([(f"{TASK}/{i}.png", b"tile %d" % i) for i in range(4)] + [(f"{TASK}/grid.png", b"grid")])
    *files, (last, all_in_place) = spy.calls
    assert len(files) == 5 and all(Path(path).name.startswith(".tmp-") for path, _ in files)
    assert (Path(last), all_in_place) == (folder, True)  # one folder sync, after every rename
    assert sorted(p.name for p in folder.iterdir()) == ["0.png", "1.png", "2.png", "3.png", "grid.png", "input-0.png"]


def test_fast_puts_never_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalImageStore(tmp_path / "images", durable=False)
    spy = FsyncSpy(monkeypatch, tmp_path / "images" / TASK / "0.png")
    store.put(f"{TASK}/0.png", b"an image")
    assert spy.calls == []
    assert (tmp_path / "images" / TASK / "0.png").read_bytes() == b"an image"
