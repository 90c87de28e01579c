"""Server-sent events of a job's or a batch's progress (GET /v1/jobs/{id}/events).

Each stream reads one small row (a job's state and page counters, or a batch's jobs
counted by state) every PAGEMILL_EVENTS_POLL_SECONDS in a short session of its own, and
sends an event only when that changed: `state` when the state did, else `progress`. The
event's id is a digest of what it says, so a client reconnecting with Last-Event-ID is sent
nothing it has already seen, and one that saw the final event gets 204 (EventSource then
stops reconnecting). A comment line keeps idle connections open; the stream ends after the
event that shows the job or batch ended, or after PAGEMILL_EVENTS_MAX_SECONDS (the client
reconnects).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from sqlalchemy import func, select

from app.db import session_scope
from app.errors import TransientError, translate
from app.models import Batch, Job, JobState
from app.schemas import BatchSnapshot, JobSnapshot
from app.settings import Settings
from app.status import batch_state

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    data: dict[str, Any]

    @property
    def id(self) -> str:
        encoded = json.dumps(self.data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]

    @property
    def state(self) -> str:
        return str(self.data["state"])

    @property
    def terminal(self) -> bool:
        return JobState(self.state).terminal


def job_snapshot(job_id: str, tenant: str | None) -> Snapshot | None:
    """The job's state and counters; None when there is no such job for `tenant`."""
    query = select(Job.state, Job.pages_total, Job.pages_done, Job.pages_failed, Job.error).where(
        Job.id == job_id
    )
    if tenant is not None:
        query = query.where(Job.tenant == tenant)
    with session_scope() as session:
        row = session.execute(query).one_or_none()
    if row is None:
        return None
    return Snapshot(
        JobSnapshot(
            id=job_id,
            state=str(row.state),
            pages_total=row.pages_total,
            pages_done=row.pages_done,
            pages_failed=row.pages_failed,
            error=row.error,
        ).model_dump()
    )


def batch_snapshot(batch_id: str, tenant: str | None) -> Snapshot | None:
    """The batch's jobs counted by state, with their page counters summed; None when there
    is no such batch for `tenant`. One grouped read over the batch's jobs (by index)."""
    exists = select(Batch.id).where(Batch.id == batch_id)
    if tenant is not None:
        exists = exists.where(Batch.tenant == tenant)
    with session_scope() as session:
        if session.execute(exists).first() is None:
            return None
        rows = session.execute(
            select(
                Job.state,
                func.count(),
                func.count(Job.pages_total),
                func.coalesce(func.sum(Job.pages_total), 0),
                func.coalesce(func.sum(Job.pages_done), 0),
                func.coalesce(func.sum(Job.pages_failed), 0),
            )
            .where(Job.batch_id == batch_id)
            .group_by(Job.state)
        ).all()
    states: Counter[str] = Counter({str(row[0]): int(row[1]) for row in rows})
    sums = [sum(int(row[i] or 0) for row in rows) for i in range(2, 6)]
    known, total, done, failed = sums
    jobs_total = sum(states.values())
    return Snapshot(
        BatchSnapshot(
            id=batch_id,
            state=str(batch_state(states)),
            jobs_total=jobs_total,
            jobs_ended=sum(n for s, n in states.items() if JobState(s).terminal),
            jobs_by_state=dict(sorted(states.items())),
            pages_total=total if known == jobs_total else None,
            pages_done=done,
            pages_failed=failed,
        ).model_dump()
    )


def format_event(event: str, event_id: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def stream(
    read: Callable[[], Snapshot | None],
    first: Snapshot,
    last_event_id: str | None,
    settings: Settings,
) -> AsyncIterator[str]:
    """The events of one connection, starting from `first` (read when it was accepted)."""
    sent_id = last_event_id
    state: str | None = None
    quiet_since = started = time.monotonic()
    snapshot: Snapshot | None = first
    yield f"retry: {int(settings.events_poll_seconds * 1000) + 1000}\n\n"
    while True:
        if snapshot is not None:
            if snapshot.id != sent_id:
                kind = "state" if snapshot.state != state else "progress"
                yield format_event(kind, snapshot.id, snapshot.data)
                sent_id, quiet_since = snapshot.id, time.monotonic()
            state = snapshot.state
            if snapshot.terminal:
                return
        if time.monotonic() - started >= settings.events_max_seconds:
            return  # the client reconnects with Last-Event-ID
        if time.monotonic() - quiet_since >= settings.events_heartbeat_seconds:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(settings.events_poll_seconds)
        try:
            snapshot = await anyio.to_thread.run_sync(read)
        except Exception as raw:
            exc = translate(raw)
            if not isinstance(exc, TransientError):
                raise
            log.warning("event stream: %s; trying again", exc)  # the stream waits it out
            continue
        if snapshot is None:  # deleted meanwhile (a submission discarded)
            yield format_event("gone", "gone", {})
            return
