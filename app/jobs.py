"""Every change of a batch's, job's, page's or region's state happens here.

Workers call these functions around their plain work; each is one short transaction and
safe to repeat, because Celery delivers a message at least once.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.orm import Session, selectinload

from app import metrics, webhooks
from app.db import session_scope
from app.errors import WorkHeld
from app.models import (
    DEFAULT_TENANT,
    Batch,
    Job,
    JobState,
    Page,
    PageState,
    Region,
    RegionState,
    WebhookDelivery,
    utcnow,
)
from app.settings import get_settings

_TERMINAL_PAGES = tuple(state for state in PageState if state.terminal)
_ACTIVE_JOBS = tuple(state for state in JobState if not state.terminal)
# Region columns a layout row may leave out, so every row of a page has the same keys.
_REGION_OPTIONAL: dict[str, Any] = {"source": None, "content": None, "image_key": None,
                                    "engine": None}  # fmt: skip


def new_id() -> str:
    return uuid.uuid4().hex


def _ended(session: Session, job: Job) -> list[WebhookDelivery]:
    """The notifications a job's end owes, written in the transaction that ended it: its
    own callback, and its batch's when it was the batch's last job to end. The batch row is
    locked first, so of two jobs ending at once exactly one sees the batch ended."""
    owed: list[WebhookDelivery] = []
    url = (job.options or {}).get("callback_url")
    if url:
        owed.append(webhooks.add_notification(session, url=url, tenant=job.tenant, job_id=job.id))
    if job.batch_id is not None:
        batch = session.get(Batch, job.batch_id, with_for_update=True)
        if batch is not None:
            owed += _batch_ended(session, batch)
    session.flush()
    return owed


def _batch_ended(session: Session, batch: Batch) -> list[WebhookDelivery]:
    """The batch's notification, when it has a callback, its submission is complete and
    none of its jobs is still active. The caller holds the batch row's lock."""
    if not batch.callback_url or batch.sealed_at is None:
        return []
    session.flush()
    running = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.batch_id == batch.id, Job.state.in_(_ACTIVE_JOBS))
    )
    if running:
        return []
    return [
        webhooks.add_notification(
            session, url=batch.callback_url, tenant=batch.tenant, batch_id=batch.id
        )
    ]


# -- leases ----------------------------------------------------------------------------
# A task that claims a page or job writes its holder and a heartbeat; a thread in the
# worker process refreshes the heartbeat while it works. A holder whose heartbeat is older
# than the lease is dead, and the sweeper sends its work again.


def holder_id() -> str:
    """The claiming thread: host, process and thread, so a duplicate delivery to another
    thread of the same process is told apart from the one holding the work."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"[:128]


def _lease_cutoff(now: datetime) -> datetime:
    return now - timedelta(seconds=get_settings().lease_seconds)


def _holder_gone(held_by: str) -> bool:
    """True when the holder was a process on this machine that no longer runs (a killed pool
    child, whose message Celery hands out again at once): no need to wait for its lease."""
    host, _, rest = held_by.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _check_lease(row: Job | Page, holder: str, now: datetime, what: str) -> None:
    """Raises WorkHeld when another live holder has the row (a duplicate delivery)."""
    if (
        row.held_by is not None
        and row.held_by != holder
        and row.heartbeat_at is not None
        and row.heartbeat_at > _lease_cutoff(now)
        and not _holder_gone(row.held_by)
    ):
        raise WorkHeld(f"{what} is held by {row.held_by}")


def _take_lease(row: Job | Page, holder: str, now: datetime) -> None:
    if row.held_by is None and row.updated_at is not None:
        # Since its last change of state: the time its message waited in the queue.
        metrics.observe("queue_wait", (now - row.updated_at).total_seconds())
    row.held_by = holder
    row.heartbeat_at = now
    row.updated_at = now


def heartbeat(
    holders: Sequence[str], job_ids: Sequence[str], pages: Sequence[tuple[str, int]]
) -> None:
    """Refreshes the heartbeat of what these holders (one worker process's threads) hold.
    By primary key, so it costs the same on ten million rows."""
    now = utcnow()
    with session_scope() as session:
        if job_ids:
            session.execute(
                update(Job)
                .where(Job.id.in_(job_ids), Job.held_by.in_(holders))
                .values(heartbeat_at=now)
            )
        if pages:
            session.execute(
                update(Page)
                .where(tuple_(Page.job_id, Page.number).in_(pages), Page.held_by.in_(holders))
                .values(heartbeat_at=now)
            )


def release(job_id: str, number: int | None = None, holder: str | None = None) -> None:
    """Gives up the lease on a job (prepare, assemble) or a page when its stage ends."""
    holder = holder or holder_id()
    with session_scope() as session:
        if number is None:
            session.execute(
                update(Job).where(Job.id == job_id, Job.held_by == holder).values(held_by=None)
            )
        else:
            session.execute(
                update(Page)
                .where(Page.job_id == job_id, Page.number == number, Page.held_by == holder)
                .values(held_by=None)
            )


# -- submit ----------------------------------------------------------------------------


def create_batch(
    name: str | None, tenant: str = DEFAULT_TENANT, callback_url: str | None = None
) -> str:
    batch_id = new_id()
    with session_scope() as session:
        session.add(Batch(id=batch_id, name=name, tenant=tenant, callback_url=callback_url))
    return batch_id


def seal_batch(batch_id: str) -> None:
    """Marks a batch's submission complete: from now on, the end of its last job is the
    batch's end (its webhook). Sends that webhook at once when every job has already ended."""
    with session_scope() as session:
        batch = session.get(Batch, batch_id, with_for_update=True)
        if batch is None or batch.sealed_at is not None:
            return
        batch.sealed_at = utcnow()
        owed = [row.id for row in _batch_ended(session, batch)]
    webhooks.send_deliveries(owed)


def create_job(
    *,
    filename: str,
    sha256: str,
    size_bytes: int,
    media_type: str | None,
    options: dict[str, Any],
    batch_id: str | None = None,
    tenant: str = DEFAULT_TENANT,
    password_ciphertext: str | None = None,
) -> str:
    job_id = new_id()
    with session_scope() as session:
        session.add(
            Job(
                id=job_id,
                tenant=tenant,
                batch_id=batch_id,
                filename=filename,
                content_sha256=sha256,
                size_bytes=size_bytes,
                media_type=media_type,
                options=options,
                state=JobState.QUEUED,
                password_ciphertext=password_ciphertext,
            )
        )
    return job_id


def discard_submission(job_ids: Sequence[str], batch_id: str | None = None) -> None:
    """Deletes the jobs (and batch) of a submission that failed half-way, before its
    client learnt their ids. A prepare already sent for one of them finds no job and does
    nothing; the job row lock orders this against a worker's set_pages."""
    with session_scope() as session:
        for job_id in job_ids:
            job = session.get(Job, job_id, with_for_update=True)
            if job is not None:
                session.delete(job)  # pages and regions go with it
        session.flush()
        if batch_id is not None:
            batch = session.get(Batch, batch_id)
            if batch is not None and not batch.jobs:
                session.delete(batch)


def fail_job(job_id: str, error: str) -> None:
    """Marks a job failed as a whole (the document could not be opened, or was refused)."""
    owed: list[int] = []
    with session_scope() as session:
        now = utcnow()
        changed = session.execute(  # type: ignore[attr-defined]
            update(Job)
            .where(Job.id == job_id, Job.state.in_(_ACTIVE_JOBS))
            .values(
                state=JobState.FAILED, error=error, finished_at=now, updated_at=now, held_by=None
            )
        ).rowcount
        job = session.get(Job, job_id) if changed else None
        if job is not None:
            owed = [row.id for row in _ended(session, job)]
    if changed:
        metrics.DOCUMENTS.labels(JobState.FAILED.value).inc()
    webhooks.send_deliveries(owed)


# -- bulk ingestion (app/ingest.py) -----------------------------------------------------

INGEST_LISTING, INGEST_DONE, INGEST_FAILED = "listing", "done", "failed"
# A document with a job in one of these states is not submitted again with the same options.
_SKIPPED_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.ASSEMBLING, JobState.SUCCEEDED)


def create_ingest_batch(name: str | None, tenant: str, source: dict[str, Any]) -> str:
    batch_id = new_id()
    with session_scope() as session:
        session.add(
            Batch(
                id=batch_id,
                name=name,
                tenant=tenant,
                source=source,
                ingest_state=INGEST_LISTING,
                ingest_cursor="",
                ingest_updated_at=utcnow(),
            )
        )
    return batch_id


@dataclass(frozen=True, slots=True)
class IngestState:
    tenant: str
    source: dict[str, Any]
    state: str
    cursor: str
    error: str | None


def ingest_state(batch_id: str) -> IngestState | None:
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or batch.source is None or batch.ingest_state is None:
            return None
        return IngestState(
            batch.tenant,
            batch.source,
            batch.ingest_state,
            batch.ingest_cursor or "",
            batch.ingest_error,
        )


def options_key(options: dict[str, Any]) -> str:
    """Options as compared between submissions: the same values give the same key."""
    import json

    return json.dumps(options, sort_keys=True, separators=(",", ":"))


def submitted_contents(tenant: str, hashes: Iterable[str]) -> set[tuple[str, str]]:
    """(content hash, options key) of the tenant's jobs for these hashes that are done or in
    flight: what a re-submission skips. Through the index on (tenant, content_sha256)."""
    wanted = sorted(set(hashes))
    if not wanted:
        return set()
    with session_scope() as session:
        rows = session.execute(
            select(Job.content_sha256, Job.options).where(
                Job.tenant == tenant,
                Job.content_sha256.in_(wanted),
                Job.state.in_(_SKIPPED_STATES),
            )
        ).all()
    return {(sha, options_key(options or {})) for sha, options in rows}


def record_ingest_chunk(
    batch_id: str,
    *,
    after: str,
    cursor: str,
    jobs: Sequence[dict[str, Any]],
    skipped: int,
) -> list[str] | None:
    """Creates a chunk's jobs (rows with an `error` are created failed) and moves the
    batch's cursor from `after` to `cursor`, in one transaction. Returns the ids of the
    queued jobs, whose prepare the caller sends; None when the cursor is no longer at
    `after` (another delivery of the ingestion recorded this chunk, or it was stopped)."""
    now = utcnow()
    queued: list[str] = []
    failed = 0
    rows = []
    for values in jobs:
        job_id = new_id()
        error = values.get("error")
        row = {
            "id": job_id,
            "batch_id": batch_id,
            "state": JobState.FAILED if error else JobState.QUEUED,
            "attempts": 0,
            "assemble_attempts": 0,
            "pages_done": 0,
            "pages_failed": 0,
            "created_at": now,
            "updated_at": now,
            "finished_at": now if error else None,
            **values,
        }
        rows.append(row)
        if error:
            failed += 1
        else:
            queued.append(job_id)
    with session_scope() as session:
        batch = session.get(Batch, batch_id, with_for_update=True)
        if (
            batch is None
            or batch.ingest_state != INGEST_LISTING
            or (batch.ingest_cursor or "") != after
        ):
            return None
        if rows:
            session.execute(insert(Job), rows)
        batch.ingest_cursor = cursor
        batch.ingest_submitted += len(queued)
        batch.ingest_failed += failed
        batch.ingest_skipped += skipped
        batch.ingest_updated_at = now
    if failed:
        metrics.DOCUMENTS.labels(JobState.FAILED.value).inc(failed)
    return queued


def touch_ingest(batch_id: str) -> bool:
    """Marks a listing ingestion alive (waiting on a full queue, or sent again by the
    sweeper), so the sweeper does not send it again before its time; False if it ended."""
    with session_scope() as session:
        changed = session.execute(  # type: ignore[attr-defined]
            update(Batch)
            .where(Batch.id == batch_id, Batch.ingest_state == INGEST_LISTING)
            .values(ingest_updated_at=utcnow())
        ).rowcount
    return bool(changed)


def end_ingest(batch_id: str, error: str | None = None) -> None:
    """The source is read to its end (or, with an error, cannot be read further)."""
    with session_scope() as session:
        session.execute(
            update(Batch)
            .where(Batch.id == batch_id, Batch.ingest_state == INGEST_LISTING)
            .values(
                ingest_state=INGEST_FAILED if error else INGEST_DONE,
                ingest_error=error[:4000] if error else None,
                ingest_updated_at=utcnow(),
            )
        )
    # Whatever ended the reading, no more jobs will join: the batch's end can now be told.
    seal_batch(batch_id)


# -- prepare ---------------------------------------------------------------------------


def begin_prepare(job_id: str) -> Job | None:
    """Counts a delivery of the job's prepare message and takes its lease; None when there
    is nothing to do; WorkHeld (not counted) when a live holder is preparing it."""
    holder, now = holder_id(), utcnow()
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or JobState(job.state).terminal:
            return None
        _check_lease(job, holder, now, f"job {job_id}")
        job.attempts += 1
        job.started_at = job.started_at or now
        _take_lease(job, holder, now)
        return job


@dataclass(frozen=True, slots=True)
class PageSize:
    width_pt: float
    height_pt: float


def set_pages(job_id: str, sizes: Sequence[PageSize]) -> list[int]:
    """Creates the job's page rows (once) and returns the pages still to be processed.

    One bulk insert and a two-column read of what exists, not one ORM object per page: a
    10,000-page document is recorded in well under a second."""
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or JobState(job.state).terminal:
            return []
        existing = dict(
            session.execute(select(Page.number, Page.state).where(Page.job_id == job_id)).all()
        )
        new_rows = [
            {
                "job_id": job_id,
                "number": number,
                "tenant": job.tenant,
                "width_pt": size.width_pt,
                "height_pt": size.height_pt,
            }
            for number, size in enumerate(sizes, start=1)
            if number not in existing
        ]
        if new_rows:
            session.execute(insert(Page), new_rows)
        job.pages_total = len(sizes)
        job.state = JobState.RUNNING
        job.updated_at = utcnow()
        # The stage's work is recorded: a page may finish (and send `assemble`) before the
        # page messages are all sent, so the job must not look held by this prepare.
        job.held_by = None
        return [
            n
            for n in range(1, len(sizes) + 1)
            if n not in existing or not PageState(existing[n]).terminal
        ]


# -- page ------------------------------------------------------------------------------


def claim_page(job_id: str, number: int) -> Page | None:
    """Counts a delivery of a page message and takes the page's lease. None when the page
    is already finished; WorkHeld (not counted) when a live holder has it."""
    holder, now = holder_id(), utcnow()
    with session_scope() as session:
        page = session.get(Page, (job_id, number), with_for_update=True)
        if page is None or PageState(page.state).terminal:
            return None
        _check_lease(page, holder, now, f"page {job_id}/{number}")
        page.attempts += 1
        page.started_at = page.started_at or now
        if page.state == PageState.QUEUED:
            page.state = PageState.RUNNING
        _take_lease(page, holder, now)
        _ = page.job  # loaded in this transaction: the caller reads it without another
        return page


def uncount_attempt(
    job_id: str, number: int | None = None, *, recognize: bool = False, assemble: bool = False
) -> None:
    """Gives back a delivery that ended in a transient error (a service was down), so an
    outage does not use up the attempts meant for documents that crash workers."""
    with session_scope() as session:
        if number is None:
            counter = Job.assemble_attempts if assemble else Job.attempts
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state.in_(_ACTIVE_JOBS), counter > 0)
                .values({counter: counter - 1})
            )
            return
        column = Page.recognize_attempts if recognize else Page.attempts
        session.execute(
            update(Page)
            .where(
                Page.job_id == job_id,
                Page.number == number,
                Page.state.notin_(_TERMINAL_PAGES),
                column > 0,
            )
            .values({column: column - 1})
        )


def note_page_error(job_id: str, number: int, error: str) -> None:
    """Keeps the last error of a page that will be retried, for its final message."""
    with session_scope() as session:
        session.execute(
            update(Page)
            .where(Page.job_id == job_id, Page.number == number, Page.state.notin_(_TERMINAL_PAGES))
            .values(error=error[:4000])
        )


def note_job_error(job_id: str, error: str) -> None:
    """Keeps the last error of a job's prepare or assembly that will be retried."""
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state.in_(_ACTIVE_JOBS))
            .values(error=error[:4000])
        )


def record_layout(
    job_id: str, number: int, page_values: dict[str, Any], regions: Iterable[dict[str, Any]]
) -> int | None:
    """Stores a page's regions (replacing any from an earlier delivery) and returns how many
    wait for the recognizer; None when the page has ended (its job was cancelled)."""
    rows = list(regions)
    now = utcnow()
    with session_scope() as session:
        page = session.get(Page, (job_id, number), with_for_update=True)
        if page is None or PageState(page.state).terminal:
            return None
        session.execute(delete(Region).where(Region.job_id == job_id, Region.page_number == number))
        if rows:
            # One multi-row INSERT for the page (rows given the same keys, so they batch).
            session.execute(
                insert(Region),
                [
                    {**_REGION_OPTIONAL, **row, "job_id": job_id, "page_number": number,
                     "tenant": page.tenant, "updated_at": now}
                    for row in rows
                ],
            )  # fmt: skip
        pending = sum(1 for row in rows if row.get("state", RegionState.PENDING) == "pending")
        for key, value in page_values.items():
            setattr(page, key, value)
        page.regions_total = len(rows)
        page.state = PageState.RECOGNIZING if pending else PageState.RUNNING
        page.updated_at = now
        if pending:
            page.held_by = None  # the recognizer may claim it before this task ends
        return pending


@dataclass(frozen=True, slots=True)
class RecognitionClaim:
    attempts: int
    regions: list[Region]  # the page's regions still waiting for the recognizer
    job: Job


def claim_recognition(job_id: str, number: int) -> RecognitionClaim | None:
    """Counts a delivery of a page's region batch and takes the page's lease; None when
    the page is already finished; WorkHeld (not counted) when a live holder has it."""
    holder, now = holder_id(), utcnow()
    with session_scope() as session:
        page = session.get(Page, (job_id, number), with_for_update=True)
        if page is None or PageState(page.state).terminal:
            return None
        _check_lease(page, holder, now, f"page {job_id}/{number}")
        page.recognize_attempts += 1
        _take_lease(page, holder, now)
        regions = list(
            session.scalars(
                select(Region)
                .where(
                    Region.job_id == job_id,
                    Region.page_number == number,
                    Region.state == RegionState.PENDING,
                )
                .order_by(Region.index)
            )
        )
        return RecognitionClaim(attempts=page.recognize_attempts, regions=regions, job=page.job)


def record_region_results(job_id: str, number: int, results: Iterable[dict[str, Any]]) -> None:
    """Upserts recognition results by region key; a redelivered batch changes nothing, and
    results for a page that ended meanwhile are dropped."""
    now = utcnow()
    with session_scope() as session:
        page = session.get(Page, (job_id, number), with_for_update=True)
        if page is None or PageState(page.state).terminal:
            return  # cancelled (or given up) while the engine worked: keep nothing
        # One statement run with every region's values (executemany), not a round trip
        # per region; rows are grouped by the columns they set.
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in results:
            groups.setdefault(tuple(k for k in row if k != "index"), []).append(row)
        table = cast(Table, Region.__table__)
        for columns, rows in groups.items():
            statement = (
                update(table)
                .where(
                    table.c.job_id == job_id,
                    table.c.page_number == number,
                    table.c.index == bindparam("b_index"),
                )
                .values(
                    updated_at=now,
                    attempts=table.c.attempts + 1,
                    **{key: bindparam(f"b_{key}") for key in columns},
                )
            )
            session.connection().execute(
                statement, [{f"b_{key}": row[key] for key in ("index", *columns)} for row in rows]
            )


def complete_page(
    job_id: str,
    number: int,
    *,
    error: str | None = None,
    recognize_ms: float | None = None,
) -> bool:
    """Marks a page finished and bumps the job's counter. Returns True when the job's pages
    are all finished and it still needs assembling: the caller then enqueues `assemble`.

    The counter moves only when the page's state changes, so a redelivered message cannot
    count a page twice; it still returns True, so an `assemble` lost in a crash is re-sent.
    """
    state = PageState.FAILED if error else PageState.SUCCEEDED
    now = utcnow()
    with session_scope() as session:
        values: dict[str, Any] = {
            "state": state,
            "error": error,
            "finished_at": now,
            "updated_at": now,
            "held_by": None,
        }
        if recognize_ms is not None:
            values["recognize_ms"] = recognize_ms
        changed = session.execute(  # type: ignore[attr-defined]
            update(Page)
            .where(Page.job_id == job_id, Page.number == number, Page.state.notin_(_TERMINAL_PAGES))
            .values(**values)
        ).rowcount
        if changed:
            # Concurrent completions queue on the job row's lock; each then reads the
            # count with its own increment, so exactly one sees the last page.
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    pages_done=Job.pages_done + 1,
                    pages_failed=Job.pages_failed + (1 if error else 0),
                    updated_at=now,
                )
            )
        job = session.get(Job, job_id, populate_existing=True)
        awaiting = job is not None and job.awaiting_assembly
    if changed:
        metrics.PAGES.labels(state.value).inc()
    return awaiting


# -- the sweeper (app.sweeper) ----------------------------------------------------------


def mark_resent(job_ids: Sequence[str] = (), pages: Sequence[tuple[str, int]] = ()) -> list[Any]:
    """Work the sweeper sends again: its dead holder is cleared and its clock restarts, so
    the next sweep waits before sending it again. Only rows still unheld, or held by a dead
    holder, are touched (a claim in between wins); returns the job ids or page keys that
    were, which the caller then sends."""
    now = utcnow()
    cutoff = _lease_cutoff(now)
    changed: list[Any] = []
    with session_scope() as session:
        if job_ids:
            changed += session.scalars(
                update(Job)
                .where(
                    Job.id.in_(job_ids),
                    Job.state.in_(_ACTIVE_JOBS),
                    or_(
                        Job.held_by.is_(None), Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff
                    ),
                )
                .values(held_by=None, updated_at=now)
                .returning(Job.id)
                .execution_options(synchronize_session=False)
            ).all()
        if pages:
            changed += [
                (job_id, number)
                for job_id, number in session.execute(
                    update(Page)
                    .where(
                        tuple_(Page.job_id, Page.number).in_(pages),
                        Page.state.notin_(_TERMINAL_PAGES),
                        or_(
                            Page.held_by.is_(None),
                            Page.heartbeat_at.is_(None),
                            Page.heartbeat_at < cutoff,
                        ),
                    )
                    .values(held_by=None, updated_at=now)
                    .returning(Page.job_id, Page.number)
                    .execution_options(synchronize_session=False)
                )
            ]
    return changed


def get_job(job_id: str) -> Job | None:
    with session_scope() as session:
        return session.get(Job, job_id)


def ready_for_assembly(job_id: str) -> bool:
    """True when every page is finished but the job is not: `assemble` is (re)sent."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        return job is not None and job.awaiting_assembly


# -- assemble --------------------------------------------------------------------------


def begin_assemble(job_id: str) -> Job | None:
    """Counts a delivery of `assemble`, takes the job's lease and loads the job with its
    pages and regions; None if already finished, or failed now because its deliveries ran
    out; WorkHeld (not counted) when a live holder is assembling it."""
    holder, now = holder_id(), utcnow()
    max_attempts = get_settings().task_max_attempts
    owed: list[int] = []
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or not job.awaiting_assembly:
            return None
        _check_lease(job, holder, now, f"job {job_id}")
        job.assemble_attempts += 1
        if job.assemble_attempts > max_attempts:
            reason = job.error or "the worker was lost each time"
            job.error = f"assembly gave up after {job.assemble_attempts - 1} deliveries: {reason}"
            job.state = JobState.FAILED
            job.finished_at = job.updated_at = now
            job.held_by = None
            owed = [row.id for row in _ended(session, job)]
            job = None
        else:
            if job.state != JobState.ASSEMBLING:
                job.state = JobState.ASSEMBLING
            _take_lease(job, holder, now)
            # Pages and their regions in two queries (not one per page), read after the session.
            session.scalars(
                select(Job)
                .where(Job.id == job_id)
                .options(selectinload(Job.pages).selectinload(Page.regions))
            ).one()
    webhooks.send_deliveries(owed)
    return job


def finish_job(job_id: str, markdown_key: str | None, json_key: str | None) -> JobState:
    """The job's final state: succeeded, partial (some pages failed) or failed (all did)."""
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None:
            raise LookupError(job_id)
        if JobState(job.state).terminal:
            return JobState(job.state)
        if job.pages_total and job.pages_failed >= job.pages_total:
            job.state = JobState.FAILED
            job.error = job.error or "every page failed"
        elif job.pages_failed:
            job.state = JobState.PARTIAL
            job.error = f"{job.pages_failed} of {job.pages_total} pages failed"
        else:
            job.state = JobState.SUCCEEDED
        job.result_markdown_key = markdown_key
        job.result_json_key = json_key
        job.finished_at = job.updated_at = utcnow()
        job.held_by = None
        final = JobState(job.state)
        owed = [row.id for row in _ended(session, job)]
    metrics.DOCUMENTS.labels(final.value).inc()
    webhooks.send_deliveries(owed)
    return final


# -- cancel and retry ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    changed: bool  # False: the job had already ended, in `state`
    state: JobState
    tenant: str


def cancel_job(job_id: str, tenant: str | None = None) -> CancelOutcome | None:
    """Ends an unfinished job as `cancelled` and its unfinished pages with it. Every message
    still queued for the job then finds its page or job finished and does nothing. None when
    there is no such job (for that tenant)."""
    with session_scope() as session:
        # Pages before the job, in the order complete_page takes them, so the two never
        # wait on each other.
        session.execute(select(Page.number).where(Page.job_id == job_id).with_for_update())
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or (tenant is not None and job.tenant != tenant):
            return None
        if JobState(job.state).terminal:
            return CancelOutcome(changed=False, state=JobState(job.state), tenant=job.tenant)
        now = utcnow()
        session.execute(
            update(Page)
            .where(Page.job_id == job_id, Page.state.notin_(_TERMINAL_PAGES))
            .values(state=PageState.CANCELLED, finished_at=now, updated_at=now, held_by=None)
        )
        job.state = JobState.CANCELLED
        job.error = "cancelled"
        job.finished_at = now
        job.updated_at = now
        job.held_by = None
        outcome = CancelOutcome(changed=True, state=JobState.CANCELLED, tenant=job.tenant)
        owed = [row.id for row in _ended(session, job)]
    metrics.DOCUMENTS.labels(JobState.CANCELLED.value).inc()
    webhooks.send_deliveries(owed)
    return outcome


def batch_job_ids(batch_id: str, tenant: str | None = None) -> list[str] | None:
    """The ids of a batch's jobs; None when there is no such batch (for that tenant)."""
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or (tenant is not None and batch.tenant != tenant):
            return None
        return list(session.scalars(select(Job.id).where(Job.batch_id == batch_id)))


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """What a retry re-sends; nothing at all when the job had nothing to retry."""

    before: JobState
    prepare: bool = False  # the document never opened: prepare again
    pages: tuple[int, ...] = ()  # pages queued again
    assemble: bool = False  # every page is done; only the assembly is missing

    @property
    def empty(self) -> bool:
        return not (self.prepare or self.pages or self.assemble)


_RETRIED_PAGES = (PageState.FAILED, PageState.CANCELLED)


def retry_job(job_id: str, tenant: str | None = None) -> RetryPlan | None:
    """Puts an ended job's failed and cancelled pages back in the queue (regions dropped,
    attempts reset) and the job back to running, or the whole job back to `prepare` when its
    document never opened. Only ended jobs are retried: a running one may be assembling.
    The caller sends the plan's messages after this commits. None when there is no such job.
    """
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or (tenant is not None and job.tenant != tenant):
            return None
        before = JobState(job.state)
        if not before.terminal or before == JobState.SUCCEEDED:
            return RetryPlan(before)
        now = utcnow()
        again = [page.number for page in job.pages if page.state in _RETRIED_PAGES]
        if not job.pages:
            plan = RetryPlan(before, prepare=True)
            job.state = JobState.QUEUED
            job.attempts = 0
        elif again:
            plan = RetryPlan(before, pages=tuple(again))
            session.execute(
                delete(Region).where(Region.job_id == job_id, Region.page_number.in_(again))
            )
            session.execute(
                update(Page)
                .where(Page.job_id == job_id, Page.number.in_(again))
                .values(
                    state=PageState.QUEUED,
                    error=None,
                    attempts=0,
                    recognize_attempts=0,
                    regions_total=None,
                    render_ms=None,
                    layout_ms=None,
                    recognize_ms=None,
                    held_by=None,
                    heartbeat_at=None,
                    started_at=None,
                    finished_at=None,
                    updated_at=now,
                )
            )
            job.state = JobState.RUNNING
        elif before in (JobState.FAILED, JobState.CANCELLED):
            plan = RetryPlan(before, assemble=True)  # ended in (or during) assembly
            job.state = JobState.RUNNING
        else:
            return RetryPlan(before)
        finished = [p for p in job.pages if p.number not in again]
        job.pages_done = sum(1 for p in finished if p.state in _TERMINAL_PAGES)
        job.pages_failed = sum(1 for p in finished if p.state == PageState.FAILED)
        job.error = None
        job.finished_at = None
        job.result_markdown_key = None
        job.result_json_key = None
        job.assemble_attempts = 0
        job.held_by = None
        job.heartbeat_at = None
        job.updated_at = now
        return plan
