"""The image-store contract on a real S3 server (SeaweedFS), and what only S3 can get wrong:
a server that is down, a bucket that is missing, credentials it refuses."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from journeyd.domain.errors import UNREACHABLE, StorageUnavailable
from journeyd.media.s3 import CREATE_BUCKET, CREDENTIALS, S3ImageStore
from journeyd.media.storage import ImageStore
from tests.image_store_contract import ImageStoreContract, task_id
from tests.seaweed import ACCESS_KEY, SECRET_KEY, Seaweed, free_ports

GIVE_UP_WITHIN_S = 15  # generous: a dead server costs one connect timeout and one retry, a few seconds


def s3_store(server: Seaweed, prefix: str = "", *, bucket: str = "", **overrides: str) -> S3ImageStore:
    settings = {"endpoint_url": server.endpoint, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, **overrides}
    return S3ImageStore(bucket or server.bucket, prefix, region="us-east-1", **settings)


def fresh_prefix() -> str:
    return f"tests/{secrets.token_hex(4)}"


class TestS3ImageStore(ImageStoreContract):
    @pytest.fixture
    def images(self, seaweed: Seaweed) -> ImageStore:
        return s3_store(seaweed, fresh_prefix())


def test_objects_sit_under_the_prefix_with_their_media_type(seaweed: Seaweed) -> None:
    prefix, task = fresh_prefix(), task_id()
    s3_store(seaweed, prefix + "/").put_many([(f"{task}/0.png", b"png"), (f"{task}/preview.jpg", b"jpeg")])
    behind = seaweed.client()
    png = behind.get_object(Bucket=seaweed.bucket, Key=f"{prefix}/{task}/0.png")
    assert (png["Body"].read(), png["ContentType"]) == (b"png", "image/png")
    assert behind.head_object(Bucket=seaweed.bucket, Key=f"{prefix}/{task}/preview.jpg")["ContentType"] == "image/jpeg"


def test_without_a_prefix_keys_are_the_local_keys(seaweed: Seaweed) -> None:
    key = f"{task_id()}/0.png"
    s3_store(seaweed).put(key, b"png")
    assert seaweed.client().get_object(Bucket=seaweed.bucket, Key=key)["Body"].read() == b"png"


def test_stores_under_other_prefixes_do_not_see_each_other(seaweed: Seaweed) -> None:
    one, other, task = s3_store(seaweed, fresh_prefix()), s3_store(seaweed, fresh_prefix()), task_id()
    one.put(f"{task}/0.png", b"one")
    other.put(f"{task}/0.png", b"other")
    other.delete_task(task)
    assert one.get(f"{task}/0.png") == b"one"


def test_check_names_the_bucket_and_endpoint_and_leaves_nothing(seaweed: Seaweed) -> None:
    prefix = fresh_prefix()
    assert s3_store(seaweed, prefix).check() == {"bucket": seaweed.bucket, "endpoint": seaweed.endpoint}
    assert seaweed.client().list_objects_v2(Bucket=seaweed.bucket, Prefix=prefix)["KeyCount"] == 0


def test_a_missing_bucket_is_refused_at_construction_naming_it(seaweed: Seaweed) -> None:
    with pytest.raises(StorageUnavailable) as refused:
        s3_store(seaweed, bucket="no-such-bucket")
    assert refused.value.message == (
        f"journeyd cannot reach s3://no-such-bucket/ at {seaweed.endpoint}: "
        f"there is no bucket 'no-such-bucket'; {CREATE_BUCKET}"
    )


def test_refused_credentials_are_said_to_be_the_problem(seaweed: Seaweed) -> None:
    with pytest.raises(StorageUnavailable) as refused:
        s3_store(seaweed, secret_key="not-the-secret")
    assert refused.value.message.startswith(f"journeyd cannot reach s3://{seaweed.bucket}/ at {seaweed.endpoint}: ")
    assert refused.value.message.endswith(CREDENTIALS)


def test_no_server_at_the_endpoint_is_refused_at_construction_quickly() -> None:
    (port,) = free_ports(1)  # nothing listens there
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as refused:
        S3ImageStore("journeyd-test", endpoint_url=f"http://127.0.0.1:{port}", access_key="a", secret_key="b")
    assert time.monotonic() - started < GIVE_UP_WITHIN_S
    assert refused.value.place == f"s3://journeyd-test/ at http://127.0.0.1:{port}"
    assert "cannot connect" in refused.value.problem
    assert refused.value.message.endswith(UNREACHABLE)


def test_a_server_that_goes_down_is_storage_unavailable_then_recovers(tmp_path: Path) -> None:
    """Its own server: stopping the session's would break the other tests."""
    server = Seaweed(tmp_path / "seaweed").start()
    try:
        images, task = s3_store(server, "outage"), task_id()
        images.put(f"{task}/0.png", b"before")
        server.stop()
        for call in (
            lambda: images.put(f"{task}/1.png", b"during"),
            lambda: images.get(f"{task}/0.png"),
            lambda: images.open(f"{task}/0.png"),
            lambda: images.delete(f"{task}/0.png"),
            lambda: images.delete_task(task),
            images.check,
        ):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable) as down:
                call()
            assert time.monotonic() - started < GIVE_UP_WITHIN_S
            assert down.value.place == f"s3://{server.bucket}/outage at {server.endpoint}"
            assert "cannot connect" in down.value.problem
        server.start()
        assert images.get(f"{task}/0.png") == b"before"  # a PUT that answered is kept
        images.put(f"{task}/1.png", b"after")
        assert images.check()["bucket"] == server.bucket
    finally:
        server.stop()


def test_an_image_whose_put_answered_survives_the_server_being_killed(tmp_path: Path) -> None:
    """The worker commits the row naming an image once its PUT answered: that image must outlive a crash."""
    server = Seaweed(tmp_path / "seaweed").start()
    try:
        images, task = s3_store(server, "crash"), task_id()
        images.put_many([(f"{task}/{i}.png", f"image {i}".encode()) for i in range(4)])
        server.kill()
        server.start()
        assert [images.get(f"{task}/{i}.png") for i in range(4)] == [f"image {i}".encode() for i in range(4)]
    finally:
        server.stop()
