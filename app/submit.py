"""The submitter: store the original under its content hash, create the job, enqueue
`prepare`. No heavy work and no ML imports, so it is as fast as storage and the broker."""

from __future__ import annotations

import glob
import hashlib
import logging
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from app import jobs
from app.errors import BrokerUnavailable, TransientError, translate
from app.media import display_filename, sniff_media_type
from app.queue import PREPARE, get_celery, send
from app.schemas import JobOptions
from app.settings import Settings, get_settings
from app.storage import get_storage, original_key, sha256_file

log = logging.getLogger(__name__)


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
    key = original_key(tenant, digest)
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
    _send_or_discard(job_id)
    return Submitted(job_id=job_id, filename=filename)


def _send_or_discard(job_id: str) -> None:
    """A job whose prepare cannot be sent is deleted again: its submitter gets an error
    instead of its id, so it must not linger as a queued job nobody knows of."""
    try:
        send(PREPARE, job_id)
    except Exception as exc:
        _discard([job_id], None)
        found = translate(exc)
        if isinstance(found, TransientError):
            raise found from exc
        raise


def check_broker() -> None:
    """BrokerUnavailable unless the broker accepts a connection now: checked before a
    submission creates anything, so an outage costs no half-made batch."""
    try:
        with get_celery().connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=5)
    except Exception as exc:
        raise BrokerUnavailable(f"broker unreachable: {exc}") from exc


def submit_streams(
    uploads: Sequence[tuple[IO[bytes], str]],
    *,
    batch_name: str | None,
    options: JobOptions | None,
    tenant: str,
    settings: Settings | None = None,
    batch_callback_url: str | None = None,
) -> tuple[str | None, list[str]]:
    """One request's uploads (already validated) as jobs, and as a batch when there are
    several or a name: all of them or, after an error, none (the error is raised)."""
    settings = settings or get_settings()
    check_broker()
    get_storage(settings)  # reaches the storage: an outage fails here, before any row
    batch_id = (
        jobs.create_batch(batch_name, tenant, batch_callback_url)
        if len(uploads) > 1 or batch_name or batch_callback_url
        else None
    )
    ids: list[str] = []
    try:
        for source, filename in uploads:
            submitted = submit_stream(
                source,
                filename,
                batch_id=batch_id,
                options=options,
                tenant=tenant,
                settings=settings,
            )
            ids.append(submitted.job_id)
        if batch_id is not None:
            jobs.seal_batch(batch_id)
    except BaseException:
        _discard(ids, batch_id)
        raise
    return batch_id, ids


def _discard(job_ids: list[str], batch_id: str | None) -> None:
    try:
        jobs.discard_submission(job_ids, batch_id)
    except Exception:
        # The database is down too: the jobs stay queued, and the sweeper sends their
        # prepare again later, so they still end consistently.
        log.warning("could not discard unsent jobs %s", job_ids, exc_info=True)


def _password_ciphertext(options: JobOptions | None, settings: Settings) -> str | None:
    if options is None or options.password is None:
        return None
    from app.passwords import encrypt_password

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
