"""Job and batch status as the API and CLI show it, read from the database."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.models import Batch, Job, JobState, WebhookDelivery, utcnow
from app.schemas import (
    BatchOut,
    IngestOut,
    JobOut,
    PageOut,
    Progress,
    ResultLinks,
    Timings,
    WebhookOut,
)
from app.settings import get_settings


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def webhook_out(row: WebhookDelivery) -> WebhookOut:
    return WebhookOut(
        event_id=row.event_id,
        attempt=row.attempt,
        state=row.state,
        url=row.url,
        due_at=row.due_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        status_code=row.status_code,
        error=row.error,
    )


def job_out(
    job: Job,
    *,
    with_pages: bool = False,
    link_base: str = "",
    webhooks: Sequence[WebhookDelivery] = (),
) -> JobOut:
    total = job.pages_total
    if JobState(job.state).terminal:
        percent = 100.0
    else:
        percent = round(100.0 * job.pages_done / total, 1) if total else 0.0
    result = None
    if job.result_markdown_key:
        result = ResultLinks.model_validate(
            {
                "markdown": f"{link_base}/v1/jobs/{job.id}/result?format=md",
                "json": f"{link_base}/v1/jobs/{job.id}/result?format=json",
            }
        )
    return JobOut(
        id=job.id,
        batch_id=job.batch_id,
        filename=job.filename,
        media_type=job.media_type,
        size_bytes=job.size_bytes,
        state=job.state,
        error=job.error,
        options=job.options or {},
        progress=Progress(
            pages_total=total,
            pages_done=job.pages_done,
            pages_failed=job.pages_failed,
            percent=percent,
        ),
        timings=Timings(
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            queued_seconds=_seconds(job.created_at, job.started_at),
            running_seconds=_seconds(job.started_at, job.finished_at),
        ),
        result=result,
        pages=[
            PageOut(
                number=p.number,
                state=p.state,
                error=p.error,
                attempts=p.attempts,
                regions=p.regions_total,
                text_layer=p.text_layer,
                render_ms=p.render_ms,
                layout_ms=p.layout_ms,
                recognize_ms=p.recognize_ms,
                lease=_lease(p.held_by, p.heartbeat_at),
                heartbeat_at=p.heartbeat_at if p.held_by else None,
            )
            for p in job.pages
        ]
        if with_pages
        else None,
        webhooks=[webhook_out(row) for row in webhooks],
    )


def _lease(held_by: str | None, heartbeat_at: datetime | None) -> Literal["held", "lost"] | None:
    if held_by is None or heartbeat_at is None:
        return None
    age = (utcnow() - heartbeat_at).total_seconds()
    return "held" if age <= get_settings().lease_seconds else "lost"


def batch_state(states: Counter[str]) -> str:
    """running while any job runs; then succeeded, failed or cancelled (when every job
    ended so), or partial."""
    total = sum(states.values())
    if any(not JobState(s).terminal for s in states):
        return "running"
    for state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        if states[state] == total:
            return state
    return JobState.PARTIAL


def batch_out(
    batch: Batch, *, link_base: str = "", webhooks: Sequence[WebhookDelivery] = ()
) -> BatchOut:
    jobs = [job_out(job, link_base=link_base) for job in batch.jobs]
    states = Counter(job.state for job in jobs)
    totals = [j.progress.pages_total for j in jobs]
    pages_total = sum(t or 0 for t in totals) if all(t is not None for t in totals) else None
    pages_done = sum(j.progress.pages_done for j in jobs)
    finished = sum(1 for j in jobs if JobState(j.state).terminal)
    return BatchOut(
        id=batch.id,
        name=batch.name,
        # Still running while its source is being read, even when every job so far ended.
        state="running" if batch.ingest_state == "listing" else batch_state(states),
        jobs_total=len(jobs),
        jobs_by_state=dict(states),
        progress=Progress(
            pages_total=pages_total,
            pages_done=pages_done,
            pages_failed=sum(j.progress.pages_failed for j in jobs),
            percent=round(100.0 * finished / len(jobs), 1) if jobs else 100.0,
        ),
        created_at=batch.created_at,
        callback_url=batch.callback_url,
        jobs=jobs,
        ingest=_ingest_out(batch),
        webhooks=[webhook_out(row) for row in webhooks],
    )


def _ingest_out(batch: Batch) -> IngestOut | None:
    if batch.source is None or batch.ingest_state is None:
        return None
    source = batch.source
    where = source.get("prefix") or source.get("manifest")
    return IngestOut(
        source=where or f"{len(source.get('entries') or [])} entries",
        state=batch.ingest_state,  # type: ignore[arg-type]
        submitted=batch.ingest_submitted,
        skipped=batch.ingest_skipped,
        failed=batch.ingest_failed,
        error=batch.ingest_error,
    )


# Operator tools (the CLI, `pagemill run`) read every tenant; the API always passes its
# caller's, so another tenant's id is answered exactly like an id that does not exist.
ANY_TENANT = None


def load_job(session: Session, job_id: str, tenant: str | None) -> Job | None:
    """The job if it belongs to `tenant` (or any tenant, for ANY_TENANT), else None."""
    query = select(Job).where(Job.id == job_id).options(selectinload(Job.pages))
    if tenant is not ANY_TENANT:
        query = query.where(Job.tenant == tenant)
    return session.scalars(query).one_or_none()


def load_batch(session: Session, batch_id: str, tenant: str | None) -> Batch | None:
    """The batch if it belongs to `tenant` (or any tenant, for ANY_TENANT), else None."""
    query = select(Batch).where(Batch.id == batch_id).options(selectinload(Batch.jobs))
    if tenant is not ANY_TENANT:
        query = query.where(Batch.tenant == tenant)
    return session.scalars(query).one_or_none()
