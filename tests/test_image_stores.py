"""Choosing the image store from a URL (media/stores.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from journeyd.domain.errors import StorageUnavailable
from journeyd.media.s3 import S3ImageStore
from journeyd.media.storage import LocalImageStore
from journeyd.media.stores import open_image_store
from tests.image_store_contract import task_id
from tests.seaweed import Seaweed


def test_a_file_url_is_a_local_folder(tmp_path: Path) -> None:
    images = open_image_store(f"file://{tmp_path}/images", durable=False, min_free_bytes=1)
    assert isinstance(images, LocalImageStore)
    assert (images.root, images.durable, images.min_free_bytes) == (tmp_path / "images", False, 1)


def test_an_s3_url_is_a_bucket_and_prefix_on_the_server_the_aws_variables_name(seaweed: Seaweed) -> None:
    images = open_image_store(f"s3://{seaweed.bucket}/from/url/", durable=True, min_free_bytes=1, environ=seaweed.env)
    assert isinstance(images, S3ImageStore)
    assert (images.bucket, images.prefix, images.endpoint) == (seaweed.bucket, "from/url", seaweed.endpoint)
    key = f"{task_id()}/0.png"
    images.put(key, b"png")
    assert seaweed.client().get_object(Bucket=seaweed.bucket, Key=f"from/url/{key}")["Body"].read() == b"png"


def test_an_s3_url_for_a_missing_bucket_fails_naming_it(seaweed: Seaweed) -> None:
    with pytest.raises(StorageUnavailable, match=f"s3://absent-bucket/ at {seaweed.endpoint}: there is no bucket"):
        open_image_store("s3://absent-bucket", environ=seaweed.env)


@pytest.mark.parametrize(
    "url",
    [
        "images",
        "/var/lib/journeyd/images",
        "file:relative/images",
        "file://host/var/images",
        "http://example.com/images",
        "s3://",
        "s3:///prefix",
        "s3://Bad_Bucket/images",
        "s3://bucket/../images",
        "s3://bucket/a//b",
        "s3://bucket/images?region=eu",
    ],
)
def test_a_url_of_another_form_is_refused_naming_it(url: str) -> None:
    with pytest.raises(ValueError) as refused:
        open_image_store(url, environ={})
    assert repr(url) in str(refused.value)
