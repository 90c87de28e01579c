"""Object storage: S3-compatible (boto3) or a local folder, behind one small interface.

Keys are deterministic and begin with the tenant: originals under their content hash,
everything a job produces under its id. So a presigned URL, which reaches one key, can only
ever reach its own tenant's objects, and identical uploads are stored once per tenant.
Writing the same key twice is harmless, which keeps tasks idempotent.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from app.errors import PagemillError
from app.errors import StorageError as StorageError  # re-exported: its old home
from app.settings import Settings, get_settings


class ObjectNotFound(KeyError):
    pass


class ObjectStorage(Protocol):
    def put(self, key: str, data: bytes, content_type: str | None = None) -> None: ...
    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None: ...
    def get(self, key: str) -> bytes: ...
    def download(self, key: str, path: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def url(self, key: str, expires_seconds: int = 3600) -> str | None:
        """A presigned GET URL valid for `expires_seconds`, or None where there is none."""
        ...


# -- keys ------------------------------------------------------------------------------

# A tenant name is the first folder of every key: no slashes, dots or spaces.
TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def _tenant(tenant: str) -> str:
    if not TENANT_NAME.fullmatch(tenant):
        raise ValueError(f"invalid tenant name for a storage key: {tenant!r}")
    return tenant


def original_key(tenant: str, sha256: str) -> str:
    return f"{_tenant(tenant)}/originals/{sha256[:2]}/{sha256}"


# Kept crops live in this folder beside document.md; the markdown links to them relatively.
IMAGES_DIR = "images"


def work_prefix(tenant: str, job_id: str) -> str:
    """Intermediate objects of a job, deleted once it is assembled."""
    return f"{_tenant(tenant)}/work/{job_id}/"


def crops_key(tenant: str, job_id: str, page_number: int) -> str:
    return f"{work_prefix(tenant, job_id)}page-{page_number:05d}-crops.zip"


def result_key(tenant: str, job_id: str, name: str) -> str:
    """A result object: `document.md`, `document.json`, or `images/<file>` as linked."""
    return f"{_tenant(tenant)}/results/{job_id}/{name}"


def page_image_key(tenant: str, job_id: str, page_number: int) -> str:
    """The page as rendered, scaled down, for the web page: a result, kept after assembly."""
    return result_key(tenant, job_id, f"pages/page-{page_number:05d}.jpg")


def image_link(page_number: int, index: int) -> str:
    """A kept crop's path relative to document.md, as the markdown and JSON name it."""
    return f"{IMAGES_DIR}/page-{page_number:05d}-region-{index:04d}.png"


# The file names image_link makes, and the only ones the API serves from IMAGES_DIR.
IMAGE_NAME_PATTERN = r"^page-[0-9]{5,}-region-[0-9]{4,}\.png$"


def relink_images(markdown: str, images_dir: str) -> str:
    """The markdown with its image links pointing at `images_dir` instead of images/."""
    return markdown.replace(f"]({IMAGES_DIR}/", f"]({images_dir}/")


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# -- local folder ----------------------------------------------------------------------


class LocalStorage:
    """A folder on disk. Writes go to a temporary file and are renamed into place, so a
    reader never sees half an object."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"storage key escapes the storage folder: {key!r}")
        return path

    def _write(self, key: str, fill: Callable[[IO[bytes]], object]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self._write(key, lambda f: f.write(data))

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        def copy(f: IO[bytes]) -> None:
            with path.open("rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)

        self._write(key, copy)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def download(self, key: str, path: Path) -> None:
        try:
            shutil.copyfile(self._path(key), path)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete_prefix(self, prefix: str) -> None:
        target = self._path(prefix)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            for path in target.parent.glob(target.name + "*"):
                path.unlink(missing_ok=True)

    def url(self, key: str, expires_seconds: int = 3600) -> str | None:
        return None


# -- S3 --------------------------------------------------------------------------------

# CopyObject copies at most 5 GiB; a larger object is copied in parts of this size.
COPY_OBJECT_LIMIT = 5 * 1024**3
COPY_PART_BYTES = 512 * 1024**2


class UnreadableObject(PagemillError):
    """A source object (bulk ingestion) that these credentials cannot read: missing,
    denied, or changed since it was read. Its document fails; the rest go on."""


_REFUSAL_TEXT = {
    "NoSuchKey": "no such object",
    "NoSuchBucket": "no such bucket",
    "404": "not found",
    "NotFound": "not found",
    "AccessDenied": "access denied",
    "403": "access denied",
    "Forbidden": "access denied",
    "PreconditionFailed": "the object changed while it was read; submit it again",
    "412": "the object changed while it was read; submit it again",
    "InvalidObjectState": "the object is archived (restore it first)",
    "InvalidRange": "InvalidRange",
}
_OBJECT_REFUSALS = frozenset(_REFUSAL_TEXT)


@dataclass(frozen=True, slots=True)
class SourceObject:
    chunks: Iterator[bytes]
    etag: str
    size: int  # of the part read (from the offset on)


class S3Storage:
    """Any S3-compatible server (AWS, SeaweedFS, MinIO, Ceph)."""

    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = settings.s3_bucket or "pagemill"
        self.prefix = settings.s3_prefix
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=(
                settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
            ),
            config=Config(
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                s3={"addressing_style": "path"},
                signature_version="s3v4",
            ),
        )

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(kwargs.get("Key", "")) from None
            raise StorageError(f"S3 {code}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 unreachable: {exc}") from exc

    def ensure_bucket(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self._call(self.client.create_bucket, Bucket=self.bucket)
        except BotoCoreError as exc:
            raise StorageError(f"S3 unreachable: {exc}") from exc

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self._call(
            self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data, **extra
        )

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        extra = {"ExtraArgs": {"ContentType": content_type}} if content_type else {}
        self._call(self.client.upload_file, str(path), self.bucket, self._key(key), **extra)

    def get(self, key: str) -> bytes:
        response = self._call(self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return bytes(response["Body"].read())

    def download(self, key: str, path: Path) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.download_file(self.bucket, self._key(key), str(path))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise ObjectNotFound(key) from None
            raise StorageError(str(exc)) from exc
        except Exception as exc:
            raise StorageError(f"S3 download failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        try:
            self._call(self.client.head_object, Bucket=self.bucket, Key=self._key(key))
            return True
        except ObjectNotFound:
            return False

    def delete_prefix(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            objects = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if objects:
                self._call(
                    self.client.delete_objects, Bucket=self.bucket, Delete={"Objects": objects}
                )

    # -- reading a customer's bucket (bulk ingestion) --------------------------------------

    def _source_call(
        self, what: str, fn: Callable[..., Any], missing: str = "not found", **kwargs: Any
    ) -> Any:
        """A call on a source object: a refusal that concerns that object (missing, denied,
        changed) is an UnreadableObject for its document; an outage stays a StorageError."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _OBJECT_REFUSALS:
                text = _REFUSAL_TEXT.get(code, code)
                if code in ("404", "NotFound"):  # HEAD answers carry no error code
                    text = missing
                raise UnreadableObject(f"{what}: {text}") from None
            raise StorageError(f"S3 {code}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 unreachable: {exc}") from exc

    def bucket_problem(self, bucket: str) -> str | None:
        """Why `bucket` cannot be read with these credentials, or None when it can."""
        try:
            self._source_call(
                f"bucket {bucket}", self.client.head_bucket, "no such bucket", Bucket=bucket
            )
        except UnreadableObject as exc:
            return str(exc)
        return None

    def object_problem(self, bucket: str, key: str) -> str | None:
        """Why the object cannot be read with these credentials, or None when it can."""
        try:
            self._source_call(
                f"s3://{bucket}/{key}", self.client.head_object, "no such object",
                Bucket=bucket, Key=key,
            )  # fmt: skip
        except UnreadableObject as exc:
            return str(exc)
        return None

    def list_objects(
        self, bucket: str, prefix: str, start_after: str = ""
    ) -> Iterator[tuple[str, int]]:
        """(key, size) of every object under `prefix` after `start_after`, in key order, a
        page of the listing at a time: a million keys are never held together."""
        paginator = self.client.get_paginator("list_objects_v2")
        args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if start_after:
            args["StartAfter"] = start_after
        pages = iter(paginator.paginate(**args, PaginationConfig={"PageSize": 1000}))
        while True:
            page = self._source_call(f"listing s3://{bucket}/{prefix}", lambda: next(pages, None))
            if page is None:
                return
            for item in page.get("Contents", []):
                yield item["Key"], int(item["Size"])

    def open_object(self, bucket: str, key: str, offset: int = 0) -> SourceObject:
        """A source object's bytes from `offset` on, as a stream."""
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = self._source_call(
                f"s3://{bucket}/{key}", self.client.get_object, Bucket=bucket, Key=key, **extra
            )
        except UnreadableObject as exc:
            if offset and "InvalidRange" in str(exc):  # read to its end already
                return SourceObject(iter(()), "", offset)
            raise
        body = response["Body"]
        return SourceObject(
            body.iter_chunks(1 << 20), response.get("ETag", ""), int(response["ContentLength"])
        )

    def copy_in(self, bucket: str, key: str, etag: str, size: int, dest: str) -> None:
        """Copies a source object to `dest` inside the storage server (the bytes never pass
        through this process), only if it is still the version read (`etag`). Above
        CopyObject's 5 GiB limit, as a multipart copy."""
        source = {"Bucket": bucket, "Key": key}
        what = f"s3://{bucket}/{key}"
        target = {"Bucket": self.bucket, "Key": self._key(dest)}
        if size <= COPY_OBJECT_LIMIT:
            self._source_call(
                what,
                self.client.copy_object,
                CopySource=source,
                CopySourceIfMatch=etag,
                **target,
            )
            return
        upload = self._call(self.client.create_multipart_upload, **target)["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, size, COPY_PART_BYTES), start=1):
                end = min(size, start + COPY_PART_BYTES) - 1
                part = self._source_call(
                    what,
                    self.client.upload_part_copy,
                    CopySource=source,
                    CopySourceIfMatch=etag,
                    CopySourceRange=f"bytes={start}-{end}",
                    PartNumber=number,
                    UploadId=upload,
                    **target,
                )
                parts.append({"PartNumber": number, "ETag": part["CopyPartResult"]["ETag"]})
            self._call(
                self.client.complete_multipart_upload,
                UploadId=upload,
                MultipartUpload={"Parts": parts},
                **target,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(UploadId=upload, **target)
            raise

    def url(self, key: str, expires_seconds: int = 3600) -> str | None:
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(key)},
                ExpiresIn=expires_seconds,
            )
        )


_storages: dict[tuple[object, ...], ObjectStorage] = {}
_storages_lock = threading.Lock()


def get_storage(settings: Settings | None = None) -> ObjectStorage:
    """One client per configuration per process (boto3 clients are thread-safe)."""
    settings = settings or get_settings()
    if settings.uses_s3:
        config: tuple[object, ...] = (
            settings.s3_endpoint,
            settings.s3_bucket,
            settings.s3_prefix,
            settings.s3_access_key,
            settings.s3_region,
        )
    else:
        config = (settings.resolved_storage_dir,)
    with _storages_lock:
        storage = _storages.get(config)
        if storage is None:
            if settings.uses_s3:
                s3 = S3Storage(settings)
                s3.ensure_bucket()
                storage = s3
            else:
                storage = LocalStorage(settings.resolved_storage_dir)
            _storages[config] = storage
        return storage
