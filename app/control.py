"""Cancel and retry, as the API and the CLI do them: the state change (app.jobs, one
transaction), then what must follow its commit — the work objects deleted, the messages
sent."""

from __future__ import annotations

from dataclasses import dataclass

from app import jobs
from app.models import JobState
from app.queue import ASSEMBLE, PAGE, PREPARE, send
from app.storage import get_storage, work_prefix


def cancel_job(job_id: str, tenant: str | None = None) -> jobs.CancelOutcome | None:
    """Cancels a job; None when there is no such job for the tenant. Repeating it is safe:
    a cancelled job's work objects are deleted again (a task that was in flight may have
    written some after the first call; it deletes them too when it ends)."""
    outcome = jobs.cancel_job(job_id, tenant)
    if outcome is not None and outcome.state == JobState.CANCELLED:
        get_storage().delete_prefix(work_prefix(outcome.tenant, job_id))
    return outcome


@dataclass(frozen=True, slots=True)
class BatchCancel:
    cancelled: list[str]  # jobs cancelled by this call
    already: list[str]  # jobs cancelled before


def cancel_batch(batch_id: str, tenant: str | None = None) -> BatchCancel | None:
    """Cancels every unfinished job of a batch, and stops its ingestion first (so no job
    is created after); None when there is no such batch."""
    ids = jobs.batch_job_ids(batch_id, tenant)
    if ids is None:
        return None
    jobs.end_ingest(batch_id, "cancelled")
    ids = jobs.batch_job_ids(batch_id, tenant) or []
    result = BatchCancel([], [])
    for job_id in ids:
        outcome = cancel_job(job_id, tenant)
        if outcome is not None and outcome.state == JobState.CANCELLED:
            (result.cancelled if outcome.changed else result.already).append(job_id)
    return result


def retry_job(job_id: str, tenant: str | None = None) -> jobs.RetryPlan | None:
    """Requeues what failed or was cancelled in an ended job (see jobs.retry_job) and sends
    its messages; None when there is no such job. An empty plan: nothing to retry."""
    plan = jobs.retry_job(job_id, tenant)
    if plan is None or plan.empty:
        return plan
    if plan.prepare:
        send(PREPARE, job_id)
    for number in plan.pages:
        send(PAGE, job_id, number)
    if plan.assemble:
        send(ASSEMBLE, job_id)
    return plan


def retry_batch(batch_id: str, tenant: str | None = None) -> dict[str, jobs.RetryPlan] | None:
    """Retries every job of a batch that has something to retry; None when no such batch.
    Returns the plans of the jobs retried (empty: nothing to retry)."""
    ids = jobs.batch_job_ids(batch_id, tenant)
    if ids is None:
        return None
    plans = {job_id: retry_job(job_id, tenant) for job_id in ids}
    return {job_id: plan for job_id, plan in plans.items() if plan is not None and not plan.empty}
