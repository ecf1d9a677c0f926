"""Choose the image store from one URL: the only place that knows which adapters exist.

file:///var/lib/journeyd/images   a folder on this machine (LocalImageStore)
s3://bucket/some/prefix           an S3 bucket (S3ImageStore); the server and credentials come
                                  from the standard AWS_ENDPOINT_URL, AWS_REGION,
                                  AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY variables
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from journeyd.media.storage import MIB, ImageStore, LocalImageStore

FORMS = "use file:///absolute/folder or s3://bucket/prefix"


def open_image_store(
    url: str,
    *,
    durable: bool = True,
    min_free_bytes: int = 64 * MIB,
    environ: Mapping[str, str] = os.environ,
) -> ImageStore:
    """The store `url` names. A URL of another form is a ValueError naming it; a store that cannot
    be used (no such bucket, a server that does not answer, a folder that cannot be made) is a
    StorageUnavailable naming the place. `durable` and `min_free_bytes` concern the local disk: an S3
    PUT has answered only once the server holds the object, and the bucket's room is its own."""
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError(f"images URL {url!r} has a query or fragment; {FORMS}")
    if parts.scheme == "file":
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise ValueError(f"images URL {url!r} is not an absolute local path; {FORMS}")
        return LocalImageStore(Path(path), durable=durable, min_free_bytes=min_free_bytes)
    if parts.scheme == "s3":
        try:  # boto3 comes with the fleet extra: a single machine runs without it
            from journeyd.media.s3 import S3ImageStore, check_bucket_and_prefix
        except ImportError as error:
            raise RuntimeError(f"images URL {url!r} needs boto3: pip install 'journeyd[fleet]' ({error})") from None
        bucket, prefix = parts.netloc, parts.path.strip("/")
        if not bucket:
            raise ValueError(f"images URL {url!r} names no bucket; {FORMS}")
        try:
            check_bucket_and_prefix(bucket, prefix)
        except ValueError as error:
            raise ValueError(f"images URL {url!r}: {error}") from None
        return S3ImageStore(
            bucket,
            prefix,
            # boto3 reads the credentials and AWS_DEFAULT_REGION itself, but not AWS_REGION; and
            # passing the endpoint on makes it honoured whatever boto3 version is installed
            endpoint_url=environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None,
            region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None,
            access_key=environ.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=environ.get("AWS_SECRET_ACCESS_KEY") or None,
        )
    raise ValueError(f"images URL {url!r} is neither file:// nor s3://; {FORMS}")
