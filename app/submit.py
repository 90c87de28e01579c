"""The submitter: store the original under its content hash, create the job, enqueue
`prepare`. No heavy work and no ML imports, so it is as fast as storage and the broker."""

from __future__ import annotations

import glob
import hashlib
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from app import jobs
from app.media import display_filename, sniff_media_type
from app.queue import PREPARE, send
from app.schemas import JobOptions
from app.settings import Settings, get_settings
from app.storage import get_storage, original_key, sha256_file


@dataclass(frozen=True, slots=True)
class Submitted:
    job_id: str
    filename: str


class FileTooLarge(ValueError):
    pass


def expand_paths(patterns: Iterable[str]) -> list[Path]:
    """Files, folders (recursively, hidden files skipped) and globs, each file once."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))] or [Path(pattern)]
        for match in matches:
            if match.is_dir():
                for path in sorted(match.rglob("*")):
                    relative = path.relative_to(match)
                    if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                        found[path] = None
            elif match.is_file():
                found[match] = None
            else:
                raise FileNotFoundError(f"no such file or folder: {pattern}")
    return list(found)


def spool(source: IO[bytes], limit: int, folder: Path | None = None) -> tuple[Path, str, int]:
    """Copies a stream to a temporary file while hashing it; FileTooLarge past `limit`."""
    digest = hashlib.sha256()
    size = 0
    with tempfile.NamedTemporaryFile(delete=False, dir=folder, prefix="upload-") as handle:
        path = Path(handle.name)
        while chunk := source.read(1 << 20):
            size += len(chunk)
            if size > limit:
                break
            digest.update(chunk)
            handle.write(chunk)
    if size > limit:
        path.unlink(missing_ok=True)
        raise FileTooLarge(f"file too large: over {limit} bytes")
    return path, digest.hexdigest(), size


def submit_file(
    path: Path,
    *,
    filename: str | None = None,
    batch_id: str | None = None,
    options: JobOptions | None = None,
    tenant: str = "default",
    settings: Settings | None = None,
) -> Submitted:
    """Stores one file and enqueues it. A file that cannot be a document still becomes a
    job, which `prepare` fails with a readable error, so every input has a visible outcome."""
    settings = settings or get_settings()
    name = display_filename(filename or path.name)
    size = path.stat().st_size
    if size > settings.max_upload_bytes:
        return _refused(
            name,
            batch_id,
            options,
            tenant,
            size,
            f"file too large: {size} bytes (the limit is {settings.max_upload_bytes})",
        )
    return _store_and_enqueue(
        path, sha256_file(path), size, name, batch_id, options, tenant, settings
    )


def submit_stream(
    source: IO[bytes],
    filename: str,
    *,
    batch_id: str | None = None,
    options: JobOptions | None = None,
    tenant: str = "default",
    settings: Settings | None = None,
) -> Submitted:
    """An upload: spooled to disk and hashed in one pass, then stored like a file."""
    settings = settings or get_settings()
    filename = display_filename(filename)
    try:
        path, digest, size = spool(source, settings.max_upload_bytes)
    except FileTooLarge as exc:
        return _refused(filename, batch_id, options, tenant, settings.max_upload_bytes, str(exc))
    try:
        return _store_and_enqueue(path, digest, size, filename, batch_id, options, tenant, settings)
    finally:
        path.unlink(missing_ok=True)


def _store_and_enqueue(
    path: Path,
    digest: str,
    size: int,
    filename: str,
    batch_id: str | None,
    options: JobOptions | None,
    tenant: str,
    settings: Settings,
) -> Submitted:
    with path.open("rb") as f:
        head = f.read(1024)
    storage = get_storage(settings)
    key = original_key(digest)
    if not storage.exists(key):
        storage.put_file(key, path)
    job_id = jobs.create_job(
        filename=filename,
        sha256=digest,
        size_bytes=size,
        media_type=sniff_media_type(head),
        options=_option_values(options),
        batch_id=batch_id,
        tenant=tenant,
        password_ciphertext=_password_ciphertext(options, settings),
    )
    send(PREPARE, job_id)
    return Submitted(job_id=job_id, filename=filename)


def _password_ciphertext(options: JobOptions | None, settings: Settings) -> str | None:
    if options is None or options.password is None:
        return None
    from app.secrets import encrypt_password

    return encrypt_password(options.password.get_secret_value(), settings)


def _option_values(options: JobOptions | None) -> dict[str, object]:
    return (options or JobOptions()).model_dump(exclude_none=True)


def _refused(
    filename: str,
    batch_id: str | None,
    options: JobOptions | None,
    tenant: str,
    size: int,
    error: str,
) -> Submitted:
    """A job that ends at once with the reason, for input refused before it is stored."""
    job_id = jobs.create_job(
        filename=filename,
        sha256="",
        size_bytes=size,
        media_type=None,
        options=_option_values(options),
        batch_id=batch_id,
        tenant=tenant,
    )
    jobs.fail_job(job_id, error)
    return Submitted(job_id=job_id, filename=filename)
