"""`pagemill sweeper`: finds work that nothing will move on and sends its message again.

Work gets stuck three ways: its message never reached the broker (the sender died or the
broker refused between the database commit and the send), its holder died (a worker killed
with the message unacknowledged: Redis would hand it out only after the visibility timeout),
or the broker lost its data (Redis restarted without persistence). The sweeper reads the
database on a schedule and re-sends by name (app.queue.send):

- held work whose heartbeat is older than PAGEMILL_LEASE_SECONDS: its holder is dead;
  work that has used up its deliveries fails instead, with the reason;
- waiting work that nothing holds, older than PAGEMILL_STUCK_AFTER_SECONDS, when its queue
  is empty (so its message cannot be in the broker; work waiting in a deep queue is left);
- jobs whose pages are all finished but that are not assembled after
  PAGEMILL_ASSEMBLY_GRACE_SECONDS (with the cpu queue empty);
- bulk ingestions that recorded nothing for PAGEMILL_STUCK_AFTER_SECONDS (see _ingestions);
- everything waiting, at once, when the broker lost its data: the sweeper keeps a marker key
  in Redis, and a marker that has vanished means the queues went with it;
- webhook attempts still pending PAGEMILL_WEBHOOK_RESEND_AFTER_SECONDS after they were due,
  or taken by a worker that never finished them (app.webhooks.lost_deliveries).

A re-sent row gets a new updated_at, so it is not sent again before its time is up again; a
duplicate message is harmless (a live holder's work is dropped, finished work is a no-op).
Each rule reads at most LIMIT rows through the indexes (jobs (state, created_at), pages
(state, updated_at)), so a sweep costs the same on ten million rows. Every state change is
in app.jobs. Run one sweeper per deployment.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select

from app import jobs, webhooks
from app.db import session_scope
from app.errors import TransientError, translate
from app.models import Batch, Job, JobState, Page, PageState, utcnow
from app.queue import (
    ASSEMBLE,
    CPU_QUEUE,
    GPU_QUEUE,
    INGEST,
    PAGE,
    PREPARE,
    RECOGNIZE,
    SWEEP,
    SWEEPER_QUEUE,
    WEBHOOK,
    get_celery,
    send,
)
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

LIMIT = 500  # rows per rule per sweep
MARKER_KEY = "pagemill:sweeper-marker"


class Sweeper:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        # Set while the work that waited when the broker lost its data is being re-sent.
        self.recover_before: datetime | None = None

    # -- the broker ----------------------------------------------------------------------

    def _marker_file(self) -> Path:
        """Remembers, across restarts of the sweeper, that this broker had the marker."""
        broker = f"{self.settings.resolved_broker_url}|{self.settings.broker_key_prefix}"
        digest = hashlib.sha256(broker.encode()).hexdigest()[:16]
        return self.settings.data_dir / f"sweeper-marker-{digest}"

    def _broker(self) -> tuple[dict[str, int], bool]:
        """Messages waiting in each queue, and whether the broker lost its data since the
        last sweep. Declaring the queues also restores their bindings when they were lost
        (a message sent to an unbound queue in Redis is dropped)."""
        app = get_celery()
        depth: dict[str, int] = {}
        lost = False
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            channel = conn.default_channel
            for queue in app.amqp.queues.values():
                queue.bind(channel).declare()
                depth[queue.name] = channel.queue_declare(queue=queue.name).message_count
            if hasattr(channel, "conn_or_acquire"):  # Redis: the marker
                # Lost: this sweeper saw a marker before (its file says so) and it is gone.
                # Any marker will do, so a second sweeper by mistake cannot look like a loss.
                seen = self._marker_file()
                with channel.conn_or_acquire() as client:
                    # A hash: kombu's prefixed client prefixes HGET and HSET (not GET).
                    found = client.hget(MARKER_KEY, "token")
                    lost = found is None and seen.exists()
                    if found is None:
                        client.hset(MARKER_KEY, "token", uuid.uuid4().hex)
                if not seen.exists():
                    seen.parent.mkdir(parents=True, exist_ok=True)
                    seen.write_text("the broker had the sweeper's marker\n")
        return depth, lost

    # -- one pass ------------------------------------------------------------------------

    def sweep(self) -> dict[str, int]:
        """One pass; returns how many of each kind it re-sent or failed."""
        now = utcnow()
        depth, lost = self._broker()
        if lost:
            log.warning("the broker lost its data: every waiting job and page is sent again")
            self.recover_before = now
        counts: Counter[str] = Counter()
        self._dead_holders(now, counts)
        self._ingestions(now, counts)
        waiting = self._waiting(now, depth, counts)
        for delivery_id in webhooks.lost_deliveries(self.settings, LIMIT):
            send(WEBHOOK, delivery_id)
            counts["webhooks_resent"] += 1
        if self.recover_before is not None and not waiting:
            self.recover_before = None
        if counts:
            log.info("sweep: %s", dict(counts))
        return dict(counts)

    def _dead_holders(self, now: datetime, counts: Counter[str]) -> None:
        cutoff = now - timedelta(seconds=self.settings.lease_seconds)
        most = self.settings.task_max_attempts
        with session_scope() as session:
            pages = session.execute(
                select(
                    Page.job_id,
                    Page.number,
                    Page.state,
                    Page.attempts,
                    Page.recognize_attempts,
                    Page.error,
                )
                .where(
                    Page.state.in_([PageState.RUNNING, PageState.RECOGNIZING]),
                    Page.updated_at < cutoff,
                    Page.held_by.is_not(None),
                    or_(Page.heartbeat_at.is_(None), Page.heartbeat_at < cutoff),
                )
                .limit(LIMIT)
            ).all()
            held_jobs = session.execute(
                select(
                    Job.id,
                    Job.attempts,
                    Job.assemble_attempts,
                    Job.pages_total,
                    Job.pages_done,
                    Job.error,
                )
                .where(
                    Job.state.in_([JobState.QUEUED, JobState.RUNNING, JobState.ASSEMBLING]),
                    Job.updated_at < cutoff,
                    Job.held_by.is_not(None),
                    or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff),
                )
                .limit(LIMIT)
            ).all()
        for job_id, number, state, attempts, recognize_attempts, error in pages:
            recognizing = state == PageState.RECOGNIZING
            used = recognize_attempts if recognizing else attempts
            if used >= most:
                reason = error or "its worker was lost each time"
                if jobs.complete_page(
                    job_id, number, error=f"gave up after {used} deliveries: {reason}"
                ):
                    send(ASSEMBLE, job_id)
                counts["pages_failed"] += 1
            elif jobs.mark_resent(pages=[(job_id, number)]):
                send(RECOGNIZE if recognizing else PAGE, job_id, number)
                counts["recognize_resent" if recognizing else "pages_resent"] += 1
        for job_id, attempts, assemble_attempts, total, done, error in held_jobs:
            assembling = total is not None and done >= total
            used = assemble_attempts if assembling else attempts
            if used >= most:
                stage = "assembly" if assembling else "prepare"
                reason = error or "its worker was lost each time"
                jobs.fail_job(job_id, f"{stage} gave up after {used} deliveries: {reason}")
                counts["jobs_failed"] += 1
            elif jobs.mark_resent(job_ids=[job_id]):
                send(ASSEMBLE if assembling else PREPARE, job_id)
                counts["assemble_resent" if assembling else "prepare_resent"] += 1

    def _ingestions(self, now: datetime, counts: Counter[str]) -> None:
        """Bulk ingestions (app/ingest.py) that recorded nothing for stuck_after_seconds: a
        task's is sent again (it goes on from its cursor; a duplicate finds the cursor moved
        and stops); a `pagemill submit`'s process is gone, so it ends, saying how to go on."""
        stuck = now - timedelta(seconds=self.settings.stuck_after_seconds)
        with session_scope() as session:
            rows = session.execute(
                select(Batch.id, Batch.source)
                .where(Batch.ingest_state == jobs.INGEST_LISTING, Batch.ingest_updated_at < stuck)
                .limit(LIMIT)
            ).all()
        for batch_id, source in rows:
            if (source or {}).get("runner") == "cli":
                jobs.end_ingest(
                    batch_id, "interrupted: its `pagemill submit` stopped; submit the same "
                    "source again to go on (what is done or queued is skipped)",
                )  # fmt: skip
                counts["ingest_ended"] += 1
            elif jobs.touch_ingest(batch_id):
                send(INGEST, batch_id)
                counts["ingest_resent"] += 1

    def _waiting(self, now: datetime, depth: dict[str, int], counts: Counter[str]) -> int:
        """Re-sends waiting work nothing holds whose message cannot be in the broker."""
        recovering = self.recover_before
        stuck = recovering or now - timedelta(seconds=self.settings.stuck_after_seconds)
        grace = recovering or now - timedelta(seconds=self.settings.assembly_grace_seconds)
        cpu_free = recovering is not None or depth.get(CPU_QUEUE, 0) == 0
        gpu_free = recovering is not None or depth.get(GPU_QUEUE, 0) == 0
        sent = 0
        with session_scope() as session:
            queued_jobs: list[str] = []
            assembly: list[str] = []
            page_rows: list[Any] = []
            if cpu_free:
                queued_jobs = list(
                    session.scalars(
                        select(Job.id)
                        .where(
                            Job.state == JobState.QUEUED,
                            Job.created_at < stuck,
                            Job.updated_at < stuck,
                            Job.held_by.is_(None),
                        )
                        .limit(LIMIT)
                    )
                )
                assembly = list(
                    session.scalars(
                        select(Job.id)
                        .where(
                            Job.state.in_([JobState.RUNNING, JobState.ASSEMBLING]),
                            Job.pages_total.is_not(None),
                            Job.pages_done >= Job.pages_total,
                            Job.updated_at < grace,
                            Job.held_by.is_(None),
                        )
                        .limit(LIMIT)
                    )
                )
            states = [PageState.QUEUED, PageState.RUNNING] if cpu_free else []
            states += [PageState.RECOGNIZING] if gpu_free else []
            if states:
                page_rows = list(
                    session.execute(
                        select(Page.job_id, Page.number, Page.state)
                        .where(
                            Page.state.in_(states),
                            Page.updated_at < stuck,
                            Page.held_by.is_(None),
                        )
                        .limit(LIMIT)
                    )
                )
        for job_id in jobs.mark_resent(job_ids=queued_jobs):
            send(PREPARE, job_id)
            counts["prepare_resent"] += 1
            sent += 1
        for job_id in jobs.mark_resent(job_ids=assembly):
            send(ASSEMBLE, job_id)
            counts["assemble_resent"] += 1
            sent += 1
        recognizing = {(j, n) for j, n, state in page_rows if state == PageState.RECOGNIZING}
        for job_id, number in jobs.mark_resent(pages=[(j, n) for j, n, _ in page_rows]):
            if (job_id, number) in recognizing:
                send(RECOGNIZE, job_id, number)
                counts["recognize_resent"] += 1
            else:
                send(PAGE, job_id, number)
                counts["pages_resent"] += 1
            sent += 1
        return sent


# -- on a schedule: `pagemill sweeper` runs this app's worker with Celery beat -------------

celery_app = get_celery()
celery_app.conf.beat_schedule = {
    "sweep": {
        "task": SWEEP,
        "schedule": timedelta(seconds=get_settings().sweep_interval_seconds),
        # A sweep that waited longer than its interval is stale: the next one is on its way.
        "options": {"queue": SWEEPER_QUEUE, "expires": get_settings().sweep_interval_seconds},
    }
}
_sweeper: Sweeper | None = None


@celery_app.task(name=SWEEP, ignore_result=True)
def sweep() -> dict[str, int]:
    global _sweeper
    if _sweeper is None:
        _sweeper = Sweeper()
    try:
        return _sweeper.sweep()
    except Exception as raw:
        exc = translate(raw)
        if not isinstance(exc, TransientError):
            raise
        log.warning("sweep skipped, a service is down: %s", exc)  # the next one tries again
        return {}
