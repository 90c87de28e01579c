"""A customer's bucket for bulk-ingestion tests and benchmarks: generated prefixes of many
small, distinct, valid documents on a real SeaweedFS."""

from __future__ import annotations

import io
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.support.services import S3_KEY, S3_SECRET


def client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=32,
        ),
    )


def ensure_bucket(s3: Any, bucket: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception:
        s3.create_bucket(Bucket=bucket)


def tiny_png(number: int) -> bytes:
    """A valid 8×8 grey PNG (about 100 bytes), distinct for each number (a text chunk)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("n", str(number))
    out = io.BytesIO()
    Image.new("L", (8, 8), color=number % 256).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def put_objects(s3: Any, bucket: str, objects: Iterable[tuple[str, bytes]]) -> int:
    """Uploads (key, bytes) pairs with a few threads; returns how many."""
    with ThreadPoolExecutor(16) as pool:
        done = list(
            pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects)
        )
    return len(done)


def fill_prefix(s3: Any, bucket: str, prefix: str, count: int, start: int = 0) -> int:
    """`count` tiny PNGs under `prefix` (keys doc-000000.png, ...), numbered from `start`."""
    return put_objects(
        s3,
        bucket,
        ((f"{prefix}doc-{n:06d}.png", tiny_png(n)) for n in range(start, start + count)),
    )
