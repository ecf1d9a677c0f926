"""Images in an S3 bucket (AWS, SeaweedFS, MinIO, Garage...), so that every node sees every image.

Object keys are the local keys under an optional prefix: `<prefix>/<task id>/<name>.png`. Each image
is one PUT, and S3 stores an object whole or not at all, so no reader ever sees half an image; a PUT
has answered only once the server holds the object, which is what `durable` asks of the local store.

Any trouble with the server (refused, timed out, 5xx, bad credentials, no bucket) is a
StorageUnavailable naming `s3://bucket/prefix at <endpoint>`. The client gives up quickly (short
timeouts, one retry): a dead server must cost a request a few seconds, not hang a worker.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from journeyd.domain.errors import UNREACHABLE, StorageUnavailable
from journeyd.media.storage import StoredImage, media_type, valid_key, valid_task_id

CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 3, 10
UPLOADS = 8  # PUTs of one put_many at once (a task saves five images)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")  # no "", ".", ".." parts
_MISSING_KEY = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
CREDENTIALS = "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY and what they may do in the bucket"
CREATE_BUCKET = "create the bucket, or point journeyd at one that exists"
SERVER_TROUBLE = "check the S3 server; journeyd retries by itself"


def check_bucket_and_prefix(bucket: str, prefix: str) -> None:
    """ValueError naming what is wrong with a bucket name or key prefix."""
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"bad S3 bucket name {bucket!r}: 3-63 lower-case letters, digits, dots and hyphens")
    if prefix and not _PREFIX.match(prefix):
        raise ValueError(f"bad S3 key prefix {prefix!r}: parts of letters, digits, '.', '_' and '-', split by '/'")


def make_client(
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
) -> Any:
    """A boto3 S3 client that fails fast. What is None, boto3 finds itself (AWS_* variables,
    ~/.aws, an instance role). A set endpoint (SeaweedFS, MinIO) gets path-style URLs, which every
    S3-compatible server understands, where `bucket.host` names need DNS that rarely exists."""
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": 2, "mode": "standard"},  # the first try and one more
        max_pool_connections=32,  # API threads and workers share one client
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    # a session of its own: boto3's default session is not safe to build clients from in threads
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


def _problem(error: Exception, bucket: str) -> tuple[str, str]:
    """(what went wrong, what to do) for an error from botocore."""
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return "no credentials", CREDENTIALS
    if isinstance(error, (EndpointConnectionError, ConnectTimeoutError)):
        return f"cannot connect ({error})", UNREACHABLE
    if isinstance(error, ReadTimeoutError):
        return f"no answer within {READ_TIMEOUT_S} s", UNREACHABLE
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code", ""))
        if code == "NoSuchBucket" or (code in ("404", "NotFound") and error.operation_name == "HeadBucket"):
            return f"there is no bucket {bucket!r}", CREATE_BUCKET
        if code in _DENIED:
            return f"access denied ({code})", CREDENTIALS
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        return f"the server answered {status} {code}: {details.get('Message', '')}".rstrip(": "), SERVER_TROUBLE
    return str(error), UNREACHABLE


class S3ImageStore:
    """The ImageStore port on an S3 bucket. One client per store; boto3 clients are thread-safe."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        """Checks at once that the bucket is there and answers (`head_bucket`): a StorageUnavailable
        naming the endpoint and the bucket if not, so a bad setting stops start-up, not the first task."""
        prefix = prefix.strip("/")
        check_bucket_and_prefix(bucket, prefix)
        self.bucket, self.prefix = bucket, prefix
        self.client = client if client is not None else make_client(endpoint_url, region, access_key, secret_key)
        self.endpoint: str = self.client.meta.endpoint_url
        self.place = f"s3://{bucket}/{prefix} at {self.endpoint}"
        self._base = f"{prefix}/" if prefix else ""
        self._uploads = ThreadPoolExecutor(max_workers=UPLOADS, thread_name_prefix="journeyd-s3")
        with self._trouble("reach"):
            self.client.head_bucket(Bucket=bucket)

    @contextmanager
    def _trouble(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (BotoCoreError, ClientError) as error:
            problem, remedy = _problem(error, self.bucket)
            raise StorageUnavailable(self.place, problem, remedy, doing=doing) from error

    def _object(self, key: str) -> str:
        if not valid_key(key):
            raise ValueError(f"bad image key {key!r}")
        return self._base + key

    def put(self, key: str, data: bytes) -> None:
        self.put_many([(key, data)])

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """One PUT per image, so each is whole or absent, all at once (a task's four pictures and grid
        cost one round trip, not five). A failure leaves the others, which the task's retry overwrites
        (or its failure deletes): every PUT has ended before this returns or raises."""
        objects = [(self._object(key), media_type(key), data) for key, data in items]

        def put(name: str, content_type: str, data: bytes) -> None:
            self.client.put_object(Bucket=self.bucket, Key=name, Body=data, ContentType=content_type)

        with self._trouble("write to"):
            if len(objects) == 1:
                put(*objects[0])
                return
            running = [self._uploads.submit(put, *item) for item in objects]
            wait(running)
            for done in running:
                done.result()  # the first failure, if any

    def get(self, key: str) -> bytes:
        data = self._read(self._object(key))
        if data is None:
            raise FileNotFoundError(f"no image {key} in {self.place}")
        return data

    def open(self, key: str) -> StoredImage | None:
        return self._read(self._object(key)) if valid_key(key) else None

    def _read(self, name: str) -> bytes | None:
        with self._trouble("read from"):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=name)
            except ClientError as error:
                if str(error.response.get("Error", {}).get("Code", "")) in _MISSING_KEY:
                    return None
                raise
            with answer["Body"] as body:
                return body.read()

    def delete(self, key: str) -> None:
        name = self._object(key)
        with self._trouble("write to"):
            self.client.delete_object(Bucket=self.bucket, Key=name)  # a missing key is a success in S3

    def delete_task(self, task_id: str) -> None:
        if not valid_task_id(task_id):  # a bare prefix would list (and delete) other tasks' images
            raise ValueError(f"bad task id {task_id!r}")
        with self._trouble("write to"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self._base}{task_id}/"
            )
            for page in pages:  # up to 1000 keys a page, the most one delete_objects takes
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if not keys:
                    continue
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise StorageUnavailable(
                        self.place,
                        f"could not delete {first.get('Key')}: {first.get('Code')} {first.get('Message', '')}".strip(),
                        SERVER_TROUBLE,
                    )

    def check(self) -> dict[str, object]:
        """Readiness: a small probe object is written and deleted under the prefix. The probe's name
        is no valid image key, so it can never be served or collide with an image."""
        probe = f"{self._base}.probe-{secrets.token_hex(8)}"
        with self._trouble("write to"):
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"journeyd")
            self.client.delete_object(Bucket=self.bucket, Key=probe)
        return {"bucket": self.bucket, "endpoint": self.endpoint}
