"""Bulk ingestion: an s3:// prefix or a JSONL manifest becomes one batch of jobs.

The source is read lazily (a page of the listing, a line of the manifest at a time) and a
chunk of documents at a time: each document's bytes stream once through SHA-256 (never
held whole), then the original is copied inside the storage server under its content hash
(local files are uploaded). Each chunk's jobs and the batch's cursor are recorded in one
transaction, so an ingestion stopped anywhere (a killed worker, Ctrl-C) goes on after the
last chunk it recorded. `prepare` is sent at a bounded rate and pauses while the cpu queue
is deep.

Identity is the real content hash, not the source's ETag: ETags of multipart or encrypted
objects are no digest of the bytes, and the hash is what originals are stored under. So a
re-submission reads each object again, but copies nothing and creates no job for a
document that has a queued, running or succeeded job with the same options.

`ingest_step` is the plain function: the `ingest` task runs it a slice at a time (app/queue
INGEST; the task sends itself again to go on), the CLI runs it in its own process.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app import jobs
from app.errors import SourceError
from app.media import describe_unsupported, display_filename, sniff_media_type
from app.queue import PREPARE, queue_depths, send
from app.schemas import JobOptions
from app.settings import Settings, get_settings
from app.storage import (
    ObjectStorage,
    S3Storage,
    UnreadableObject,
    get_storage,
    original_key,
)

HEAD_BYTES = 1024
MAX_MANIFEST_LINE = 64 * 1024  # bytes; a longer line is an error, never a buffer
MAX_INLINE_ENTRIES = 10_000  # a manifest given in the API request's body
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]")


class Outcome(StrEnum):
    MORE = "more"  # the slice's time is up: call again
    WAIT = "wait"  # the cpu queue is deep: call again later
    DONE = "done"  # the source is read to its end (or the batch was stopped)
    STALE = "stale"  # another run of this ingestion recorded the chunk first: stop


@dataclass(frozen=True, slots=True)
class S3Url:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_url(url: str) -> S3Url:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not url.startswith("s3://") or not _BUCKET.fullmatch(bucket):
        raise SourceError(f"not an s3://BUCKET/KEY address: {url!r}")
    return S3Url(bucket, key)


@dataclass(frozen=True, slots=True)
class Entry:
    """One document of a source, before it is read; `cursor` is the source's position
    after it."""

    cursor: str
    source: str = ""  # a local path or s3://bucket/key
    filename: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    size: int | None = None  # from the listing
    error: str | None = None  # a bad manifest line


@dataclass(frozen=True, slots=True)
class Counts:
    submitted: int
    skipped: int
    failed: int
    errors: tuple[str, ...] = ()  # "<filename>: <error>" of the failed documents


# -- starting ---------------------------------------------------------------------------


def start_ingest(
    *,
    tenant: str,
    prefix: str | None = None,
    manifest: str | None = None,
    entries: list[dict[str, Any]] | None = None,
    name: str | None = None,
    options: JobOptions | None = None,
    from_api: bool = False,
    settings: Settings | None = None,
) -> str:
    """Checks the source and creates its batch (state `listing`); returns the batch id.
    SourceError when the source cannot be ingested as given. From the API, only buckets
    open to the tenant (PAGEMILL_INGEST_BUCKETS) and no local paths."""
    settings = settings or get_settings()
    if sum(x is not None for x in (prefix, manifest, entries)) != 1:
        raise SourceError("name exactly one source: an s3:// prefix, a manifest, or entries")
    # From the API, the buckets open to the tenant when it asked: entries naming any other
    # bucket fail (workers need not share the API's PAGEMILL_INGEST_BUCKETS).
    buckets = settings.ingest_buckets.get(tenant, []) if from_api else None
    # "cli": run by `pagemill submit` in its own process, which the sweeper never resumes
    # on a worker (the files of a local manifest may be on the submitter's machine only).
    runner = "task" if from_api else "cli"
    source: dict[str, Any] = {"api": from_api, "buckets": buckets, "runner": runner}
    if prefix is not None:
        url = parse_s3_url(prefix)
        _check_bucket(url.bucket, tenant, settings, buckets)
        source["prefix"] = str(url)
    elif manifest is not None:
        if manifest.startswith("s3://"):
            url = parse_s3_url(manifest)
            _check_bucket(url.bucket, tenant, settings, buckets)
            problem = _s3(settings).object_problem(url.bucket, url.key)
            if problem:
                raise SourceError(f"manifest {url}: {problem}")
            source["manifest"] = str(url)
        else:
            if from_api:
                raise SourceError("a manifest must be an s3:// key or given inline")
            path = Path(manifest).resolve()
            if not path.is_file():
                raise SourceError(f"no such manifest file: {manifest}")
            source["manifest"] = str(path)
    else:
        assert entries is not None
        if len(entries) > MAX_INLINE_ENTRIES:
            raise SourceError(f"over {MAX_INLINE_ENTRIES} entries: give a manifest's s3:// key")
        source["entries"] = entries
    if options is not None:
        source["options"] = options.model_dump(exclude_none=True)
        if options.password is not None:
            from app.passwords import encrypt_password

            source["password_ciphertext"] = encrypt_password(
                options.password.get_secret_value(), settings
            )
    get_storage(settings)  # reachable, before the batch exists
    return jobs.create_ingest_batch(name, tenant, source)


def _s3(settings: Settings) -> S3Storage:
    storage = get_storage(settings)
    if not isinstance(storage, S3Storage):
        raise SourceError(
            "an s3:// source needs S3 storage: set PAGEMILL_S3_ENDPOINT (and the S3 "
            "credentials); the source bucket is read with the same credentials"
        )
    return storage


def _check_bucket(bucket: str, tenant: str, settings: Settings, buckets: list[str] | None) -> None:
    problem = _bucket_refused(bucket, tenant, settings, buckets)
    if problem is None:
        problem = _s3(settings).bucket_problem(bucket)
    if problem:
        raise SourceError(problem)


def _bucket_refused(
    bucket: str, tenant: str, settings: Settings, buckets: list[str] | None
) -> str | None:
    """Why this tenant may not read `bucket` (a rule, no request), or None. `buckets`: the
    buckets open to it, None for any (the CLI)."""
    # The tenant's list first: an API caller learns nothing about other buckets, pagemill's
    # own included.
    if buckets is not None and bucket not in buckets:
        return f"bucket {bucket} is not open to tenant {tenant} (PAGEMILL_INGEST_BUCKETS)"
    if bucket == _s3(settings).bucket:
        return f"bucket {bucket} is pagemill's own storage, not a source"
    return None


# -- reading the source -----------------------------------------------------------------


def iter_entries(source: dict[str, Any], cursor: str, settings: Settings) -> Iterator[Entry]:
    """The source's documents after `cursor`, lazily."""
    if "prefix" in source:
        url = parse_s3_url(source["prefix"])
        for key, size in _s3(settings).list_objects(url.bucket, url.key, cursor):
            if not key.endswith("/"):  # a "folder" marker
                yield Entry(key, f"s3://{url.bucket}/{key}", key, size=size)
    elif "manifest" in source:
        offset, _, line = cursor.partition(":")
        yield from _manifest_entries(source["manifest"], int(offset or 0), int(line or 0), settings)
    else:
        start = int(cursor or 0)
        for index, item in enumerate(source["entries"][start:], start=start + 1):
            yield _entry(item, str(index), f"entry {index}")


def _manifest_entries(where: str, offset: int, line: int, settings: Settings) -> Iterator[Entry]:
    if where.startswith("s3://"):
        url = parse_s3_url(where)
        chunks = _s3(settings).open_object(url.bucket, url.key, offset).chunks
    else:
        chunks = _file_chunks(Path(where), offset)
    for raw, end in _lines(chunks, offset):
        line += 1
        cursor = f"{end}:{line}"
        if raw is None:
            yield Entry(
                cursor, error=f"manifest line {line}: longer than {MAX_MANIFEST_LINE} bytes"
            )
            continue
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            yield Entry(cursor, error=f"manifest line {line}: not JSON ({exc})")
            continue
        yield _entry(item, cursor, f"manifest line {line}")


def _file_chunks(path: Path, offset: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(offset)
        while chunk := f.read(1 << 20):
            yield chunk


def _lines(chunks: Iterator[bytes], offset: int) -> Iterator[tuple[bytes | None, int]]:
    """Lines (without their newline) and the byte offset after each; None for a line over
    MAX_MANIFEST_LINE, whose bytes are dropped as they come."""
    buffer = b""
    too_long = False
    for chunk in chunks:
        buffer += chunk
        while (cut := buffer.find(b"\n")) >= 0:
            offset += cut + 1
            yield (None if too_long or cut > MAX_MANIFEST_LINE else buffer[:cut]), offset
            buffer, too_long = buffer[cut + 1 :], False
        if len(buffer) > MAX_MANIFEST_LINE:
            offset += len(buffer)
            buffer, too_long = b"", True
    if buffer or too_long:
        offset += len(buffer)
        yield (None if too_long else buffer), offset


def _entry(item: Any, cursor: str, where: str) -> Entry:
    if not isinstance(item, dict) or not isinstance(item.get("source"), str):
        return Entry(cursor, error=f'{where}: needs {{"source": "PATH or s3://BUCKET/KEY"}}')
    options = item.get("options") or {}
    filename = item.get("filename")
    if not isinstance(options, dict):
        return Entry(cursor, error=f"{where}: options must be an object")
    if filename is not None and not isinstance(filename, str):
        return Entry(cursor, error=f"{where}: filename must be a string")
    source = item["source"]
    if not filename:
        filename = (
            source.removeprefix("s3://").partition("/")[2] if source.startswith("s3://") else source
        )
    return Entry(cursor, source, filename, options)


# -- one chunk --------------------------------------------------------------------------


@dataclass(slots=True)
class _Read:
    entry: Entry
    options: dict[str, Any] = field(default_factory=dict)
    password_ciphertext: str | None = None
    sha256: str = ""
    size: int = 0
    media_type: str | None = None
    etag: str = ""
    error: str | None = None


def _read(entry: Entry, state: jobs.IngestState, settings: Settings) -> _Read:
    """Options checked, then the document's bytes streamed through SHA-256."""
    read = _Read(entry)
    if entry.error:
        read.error = entry.error
        return read
    base = dict(state.source.get("options") or {})
    try:
        options = JobOptions.model_validate({**base, **entry.options})
    except (ValidationError, ValueError) as exc:
        # Field names and messages only: the value may be a password.
        what = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in getattr(exc, "errors", list)()
        )
        read.error = f"invalid options: {what or exc}"
        return read
    read.options = options.model_dump(exclude_none=True)
    if options.password is not None:
        from app.passwords import SecretKeyMissing, encrypt_password

        try:
            secret = options.password.get_secret_value()
            read.password_ciphertext = encrypt_password(secret, settings)
        except SecretKeyMissing as exc:
            read.error = str(exc)
            return read
    else:
        read.password_ciphertext = state.source.get("password_ciphertext")
    limit = settings.max_upload_bytes
    if entry.size is not None and entry.size > limit:
        read.size = entry.size
        read.error = f"file too large: {entry.size} bytes (the limit is {limit})"
        return read
    digest = hashlib.sha256()
    head = b""
    try:
        if entry.source.startswith("s3://"):
            url = parse_s3_url(entry.source)
            problem = _bucket_refused(
                url.bucket, state.tenant, settings, state.source.get("buckets")
            )
            if problem:
                read.error = problem
                return read
            opened = _s3(settings).open_object(url.bucket, url.key)
            read.etag = opened.etag
            chunks: Iterator[bytes] = opened.chunks
            if opened.size > limit:
                read.size = opened.size
                read.error = f"file too large: {opened.size} bytes (the limit is {limit})"
                return read
        else:
            if state.source["api"]:
                read.error = "local paths are not accepted from the API: use s3:// keys"
                return read
            path = Path(entry.source)
            if not path.is_file():
                read.error = f"no such file: {entry.source}"
                return read
            if path.stat().st_size > limit:
                read.size = path.stat().st_size
                read.error = f"file too large: {read.size} bytes (the limit is {limit})"
                return read
            chunks = _file_chunks(path, 0)
        for chunk in chunks:
            if len(head) < HEAD_BYTES:
                head += chunk[: HEAD_BYTES - len(head)]
            digest.update(chunk)
            read.size += len(chunk)
            if read.size > limit:
                read.error = f"file too large: over {limit} bytes"
                return read
    except (UnreadableObject, SourceError) as exc:
        read.error = str(exc)
        return read
    except OSError as exc:
        read.error = f"cannot read {entry.source}: {exc.strerror or exc}"
        return read
    read.sha256 = digest.hexdigest()
    read.media_type = sniff_media_type(head)
    if read.media_type is None:
        read.error = describe_unsupported(head)
    return read


def _store(read: _Read, tenant: str, storage: ObjectStorage) -> None:
    """The original under its content hash, unless it is there already."""
    key = original_key(tenant, read.sha256)
    if storage.exists(key):
        return
    if read.entry.source.startswith("s3://"):
        assert isinstance(storage, S3Storage)
        url = parse_s3_url(read.entry.source)
        try:
            storage.copy_in(url.bucket, url.key, read.etag, read.size, key)
        except UnreadableObject as exc:
            read.error = str(exc)
    else:
        storage.put_file(key, Path(read.entry.source))


def _row(read: _Read, tenant: str) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "filename": display_filename(read.entry.filename or "document"),
        "content_sha256": read.sha256 if not read.error else "",
        "size_bytes": read.size,
        "media_type": read.media_type,
        "options": read.options,
        "password_ciphertext": read.password_ciphertext,
        "error": read.error,
    }


def _chunk_rows(
    chunk: list[Entry], state: jobs.IngestState, settings: Settings, pool: ThreadPoolExecutor
) -> tuple[list[dict[str, Any]], int]:
    """The job rows of a chunk (failed ones with their error) and how many it skipped.
    Documents are read and copied a few at once (`pool`), in the chunk's order."""
    reads = list(pool.map(lambda entry: _read(entry, state, settings), chunk))
    seen = jobs.submitted_contents(state.tenant, (r.sha256 for r in reads if not r.error))
    kept: list[_Read] = []
    skipped = 0
    for read in reads:
        if not read.error:
            identity = (read.sha256, jobs.options_key(read.options))
            if identity in seen:
                skipped += 1
                continue
            seen.add(identity)
        kept.append(read)
    storage = get_storage(settings)
    # Two entries of one content are one original: each is stored once.
    first = {r.sha256: r for r in reversed(kept) if not r.error}
    list(pool.map(lambda read: _store(read, state.tenant, storage), first.values()))
    for read in kept:
        if not read.error and first[read.sha256].error:
            read.error = first[read.sha256].error
    return [_row(read, state.tenant) for read in kept], skipped


# -- the loop ---------------------------------------------------------------------------


class Throttle:
    """At most `rate` calls of wait() per second (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self.next > now:
            time.sleep(self.next - now)
        self.next = max(self.next, now) + self.interval


def queue_full(settings: Settings) -> bool:
    limit = settings.ingest_max_queued
    return bool(limit) and queue_depths(settings)["cpu"] > limit


def ingest_step(
    batch_id: str,
    settings: Settings | None = None,
    *,
    seconds: float | None = None,
    report: Callable[[Counts], None] | None = None,
) -> Outcome:
    """Reads the batch's source on from its cursor, a chunk at a time, for about `seconds`
    (None: to the end or until the queue is full). `report(Counts)` after each chunk."""
    settings = settings or get_settings()
    state = jobs.ingest_state(batch_id)
    if state is None or state.state != jobs.INGEST_LISTING:
        return Outcome.DONE
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        with ThreadPoolExecutor(settings.ingest_threads) as pool:
            return _chunks(batch_id, state, settings, deadline, pool, report)
    except (SourceError, UnreadableObject) as exc:
        # The source itself went away (bucket deleted, manifest unreadable): nothing more
        # can be read; what was recorded stays.
        jobs.end_ingest(batch_id, str(exc))
        return Outcome.DONE


def _chunks(
    batch_id: str,
    state: jobs.IngestState,
    settings: Settings,
    deadline: float | None,
    pool: ThreadPoolExecutor,
    report: Callable[[Counts], None] | None,
) -> Outcome:
    throttle = Throttle(settings.ingest_rate)
    cursor = state.cursor
    entries = iter_entries(state.source, cursor, settings)
    while True:
        if queue_full(settings):
            jobs.touch_ingest(batch_id)
            return Outcome.WAIT
        chunk = list(islice(entries, settings.ingest_chunk))
        if not chunk:
            jobs.end_ingest(batch_id)
            return Outcome.DONE
        rows, skipped = _chunk_rows(chunk, state, settings, pool)
        queued = jobs.record_ingest_chunk(
            batch_id, after=cursor, cursor=chunk[-1].cursor, jobs=rows, skipped=skipped
        )
        if queued is None:
            return Outcome.STALE
        cursor = chunk[-1].cursor
        for job_id in queued:
            throttle.wait()
            send(PREPARE, job_id, retry_seconds=settings.send_retry_seconds)
        if report is not None:
            errors = tuple(f"{r['filename']}: {r['error']}" for r in rows if r["error"])
            report(Counts(len(queued), skipped, len(errors), errors))
        if deadline is not None and time.monotonic() > deadline:
            return Outcome.MORE
