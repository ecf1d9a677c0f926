"""What every ImageStore promises (media/storage.py's port), run against each adapter.

No `Test` prefix, so pytest collects it only where an adapter's module combines it with an
`images` fixture: an empty store of that adapter (tests/test_image_store_local.py, ..._s3.py).
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from journeyd.domain.ids import encode_ulid
from journeyd.media.storage import ImageStore, StoredImage

_ids = itertools.count(1)
BAD_KEYS = [
    "../0.png",
    "0.png",
    "01ARZ3NDEKTSV4RRFFQ69G5FAV",  # a task id alone
    "01arz3ndektsv4rrffq69g5fav/0.png",  # ids are upper case
    "01ARZ3NDEKTSV4RRFFQ69G5FAV/0.gif",
    "01ARZ3NDEKTSV4RRFFQ69G5FAV/../01ARZ3NDEKTSV4RRFFQ69G5FAW/0.png",
    "01ARZ3NDEKTSV4RRFFQ69G5FAV/sub/0.png",
    "/01ARZ3NDEKTSV4RRFFQ69G5FAV/0.png",
    "",
]
BAD_TASK_IDS = ["", "..", "../etc", "01ARZ3NDEKTSV4RRFFQ69G5FA", "01ARZ3NDEKTSV4RRFFQ69G5FAV/", "*"]


def task_id() -> str:
    """A fresh id, different in every test (adapters may share one server)."""
    return encode_ulid((1 << 100) + next(_ids) * 7919)


def content(stored: StoredImage | None) -> bytes | None:
    """What a client would receive, whether the store hands out a file or bytes."""
    if stored is None:
        return None
    return stored.read_bytes() if isinstance(stored, Path) else stored


class ImageStoreContract:
    def test_an_image_put_is_got_back_and_served(self, images: ImageStore) -> None:
        key = f"{task_id()}/0.png"
        images.put(key, b"\x89PNG one")
        assert images.get(key) == b"\x89PNG one"
        assert content(images.open(key)) == b"\x89PNG one"

    def test_put_many_stores_every_image(self, images: ImageStore) -> None:
        task = task_id()
        files = [(f"{task}/{i}.png", f"image {i}".encode()) for i in range(4)] + [(f"{task}/grid.png", b"grid")]
        images.put_many(files)
        assert [images.get(key) for key, _ in files] == [data for _, data in files]

    def test_a_put_replaces_the_image_under_its_key(self, images: ImageStore) -> None:
        key = f"{task_id()}/preview.jpg"
        images.put(key, b"early")
        images.put(key, b"later")
        assert images.get(key) == b"later"
        assert content(images.open(key)) == b"later"

    def test_a_missing_image_is_file_not_found_to_get_and_none_to_open(self, images: ImageStore) -> None:
        key = f"{task_id()}/0.png"
        with pytest.raises(FileNotFoundError):
            images.get(key)
        assert images.open(key) is None

    def test_delete_removes_one_image_and_a_missing_one_is_fine(self, images: ImageStore) -> None:
        task = task_id()
        images.put_many([(f"{task}/0.png", b"a"), (f"{task}/1.png", b"b")])
        images.delete(f"{task}/0.png")
        images.delete(f"{task}/0.png")
        images.delete(f"{task_id()}/0.png")
        assert images.open(f"{task}/0.png") is None
        assert images.get(f"{task}/1.png") == b"b"

    def test_delete_task_removes_that_task_only(self, images: ImageStore) -> None:
        gone, kept = task_id(), task_id()
        images.put_many([(f"{gone}/0.png", b"a"), (f"{gone}/input-0.png", b"b"), (f"{kept}/0.png", b"c")])
        images.delete_task(gone)
        images.delete_task(task_id())  # a task with no images
        assert images.open(f"{gone}/0.png") is None and images.open(f"{gone}/input-0.png") is None
        assert images.get(f"{kept}/0.png") == b"c"

    @pytest.mark.parametrize("key", BAD_KEYS)
    def test_bad_keys_are_refused_and_never_served(self, images: ImageStore, key: str) -> None:
        for call in (lambda: images.put(key, b"x"), lambda: images.get(key), lambda: images.delete(key)):
            with pytest.raises(ValueError, match="bad image key"):
                call()
        with pytest.raises(ValueError, match="bad image key"):
            images.put_many([(f"{task_id()}/0.png", b"fine"), (key, b"x")])
        assert images.open(key) is None

    @pytest.mark.parametrize("bad", BAD_TASK_IDS)
    def test_delete_task_refuses_what_is_not_a_task_id(self, images: ImageStore, bad: str) -> None:
        key = f"{task_id()}/0.png"
        images.put(key, b"still here")
        with pytest.raises(ValueError, match="bad task id"):
            images.delete_task(bad)
        assert images.get(key) == b"still here"

    def test_check_passes_on_a_healthy_store(self, images: ImageStore) -> None:
        assert isinstance(images.check(), dict)

    def test_threads_can_share_one_store(self, images: ImageStore) -> None:
        """The API's threads and the workers use one store at once."""
        tasks = [task_id() for _ in range(8)]
        start = threading.Barrier(len(tasks))
        failures: list[BaseException] = []

        def save(task: str) -> None:
            try:
                start.wait()
                images.put_many([(f"{task}/{i}.png", f"{task} {i}".encode()) for i in range(3)])
            except BaseException as error:  # reported below, on the test's thread
                failures.append(error)

        threads = [threading.Thread(target=save, args=(task,)) for task in tasks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert all(images.get(f"{task}/{i}.png") == f"{task} {i}".encode() for task in tasks for i in range(3))
