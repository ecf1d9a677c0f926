"""The image-store contract on a local folder (LocalImageStore)."""

from __future__ import annotations

from pathlib import Path

import pytest

from journeyd.media.storage import ImageStore, LocalImageStore
from tests.image_store_contract import ImageStoreContract, task_id


class TestLocalImageStore(ImageStoreContract):
    @pytest.fixture
    def images(self, tmp_path: Path) -> ImageStore:
        return LocalImageStore(tmp_path / "images")


def test_a_local_image_is_served_from_its_file(tmp_path: Path) -> None:
    """So the API can hand it to sendfile instead of reading it into memory."""
    images = LocalImageStore(tmp_path / "images")
    key = f"{task_id()}/0.png"
    images.put(key, b"png")
    assert images.open(key) == tmp_path / "images" / key
