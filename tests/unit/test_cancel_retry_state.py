"""app.jobs: cancel and retry as state changes, each safe to repeat, on a migrated SQLite."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app import jobs
from app.db import session_scope
from app.models import Job, JobState, Page, PageState, Region, RegionState
from tests.unit.test_jobs_state import A4, migrated_template, sqlite_db  # noqa: F401


def _job(pages: int | None = None, batch_id: str | None = None) -> str:
    job_id = jobs.create_job(
        filename="doc.pdf",
        sha256="ab" * 32,
        size_bytes=123,
        media_type="application/pdf",
        options={},
        batch_id=batch_id,
    )
    if pages is not None:
        jobs.set_pages(job_id, [A4] * pages)
    return job_id


def _row(job_id: str) -> Job:
    job = jobs.get_job(job_id)
    assert job is not None
    return job


def _pages(job_id: str) -> dict[int, Page]:
    with session_scope() as session:
        return {p.number: p for p in session.scalars(select(Page).where(Page.job_id == job_id))}


def _region(index: int, state: str = "pending") -> dict[str, Any]:
    return {"index": index, "label": "text", "task": "text", "bbox": [0, 0, 9, 9], "state": state}


def test_cancel_ends_the_job_and_its_unfinished_pages() -> None:
    job_id = _job(pages=3)
    jobs.claim_page(job_id, 1)
    jobs.complete_page(job_id, 1)
    jobs.claim_page(job_id, 2)
    jobs.record_layout(job_id, 2, {}, [_region(0)])

    outcome = jobs.cancel_job(job_id)
    assert outcome == jobs.CancelOutcome(changed=True, state=JobState.CANCELLED, tenant="default")
    job = _row(job_id)
    assert job.state == JobState.CANCELLED and job.finished_at is not None
    assert job.pages_done == 1 and not job.awaiting_assembly
    pages = _pages(job_id)
    assert [pages[n].state for n in (1, 2, 3)] == [
        PageState.SUCCEEDED,
        PageState.CANCELLED,
        PageState.CANCELLED,
    ]

    # Every message still queued for the job finds nothing to do.
    assert jobs.claim_page(job_id, 3) is None
    assert jobs.claim_recognition(job_id, 2) is None
    assert jobs.begin_assemble(job_id) is None
    assert jobs.begin_prepare(job_id) is None
    assert jobs.set_pages(job_id, [A4] * 3) == []
    # A recognition that was in flight keeps nothing; a late completion counts nothing.
    jobs.record_region_results(job_id, 2, [{"index": 0, "state": "done", "content": "late"}])
    assert jobs.complete_page(job_id, 2) is False
    with session_scope() as session:
        region = session.get(Region, (job_id, 2, 0))
        assert region is not None and region.content is None
        assert region.state == RegionState.PENDING
    assert _row(job_id).pages_done == 1

    # Repeating is safe and says the job was already cancelled.
    assert jobs.cancel_job(job_id) == jobs.CancelOutcome(
        changed=False, state=JobState.CANCELLED, tenant="default"
    )


def test_cancel_of_an_ended_job_changes_nothing() -> None:
    job_id = _job(pages=1)
    jobs.complete_page(job_id, 1)
    jobs.finish_job(job_id, "md", "json")
    assert jobs.cancel_job(job_id) == jobs.CancelOutcome(
        changed=False, state=JobState.SUCCEEDED, tenant="default"
    )
    assert _row(job_id).state == JobState.SUCCEEDED
    assert jobs.cancel_job("missing") is None


def test_cancel_respects_the_tenant() -> None:
    job_id = _job()
    assert jobs.cancel_job(job_id, tenant="someone-else") is None
    assert _row(job_id).state == JobState.QUEUED
    outcome = jobs.cancel_job(job_id, tenant="default")
    assert outcome is not None and outcome.changed
    assert jobs.retry_job(job_id, tenant="someone-else") is None


def test_retry_requeues_only_failed_pages() -> None:
    job_id = _job(pages=3)
    for number in (1, 2, 3):
        jobs.claim_page(job_id, number)
    jobs.record_layout(job_id, 2, {"render_ms": 5.0}, [_region(0), _region(1)])
    jobs.claim_recognition(job_id, 2)
    jobs.complete_page(job_id, 1)
    jobs.complete_page(job_id, 2, error="recognition gave up")
    jobs.complete_page(job_id, 3)
    assert jobs.finish_job(job_id, "md", "json") == JobState.PARTIAL
    succeeded_before = _pages(job_id)[1]

    plan = jobs.retry_job(job_id)
    assert plan == jobs.RetryPlan(JobState.PARTIAL, pages=(2,))
    job = _row(job_id)
    assert job.state == JobState.RUNNING and job.error is None and job.finished_at is None
    assert job.result_markdown_key is None and job.result_json_key is None
    assert (job.pages_done, job.pages_failed) == (2, 0)
    pages = _pages(job_id)
    assert pages[2].state == PageState.QUEUED and pages[2].error is None
    assert (pages[2].attempts, pages[2].recognize_attempts) == (0, 0)
    assert pages[2].regions_total is None and pages[2].render_ms is None
    assert pages[1].attempts == succeeded_before.attempts == 1
    assert pages[1].finished_at == succeeded_before.finished_at
    with session_scope() as session:
        assert session.scalars(select(Region).where(Region.job_id == job_id)).all() == []

    # The job runs again: the page message counts once, then assembly is due.
    page = jobs.claim_page(job_id, 2)
    assert page is not None and page.attempts == 1
    assert jobs.complete_page(job_id, 2) is True
    assert jobs.finish_job(job_id, "md2", "json2") == JobState.SUCCEEDED
    assert (_row(job_id).pages_done, _row(job_id).pages_failed) == (3, 0)

    # Nothing failed any more: a second retry has nothing to do.
    assert jobs.retry_job(job_id) == jobs.RetryPlan(JobState.SUCCEEDED)


def test_retry_of_a_running_job_waits_for_it_to_end() -> None:
    job_id = _job(pages=2)
    jobs.complete_page(job_id, 1, error="bad")
    assert jobs.retry_job(job_id) == jobs.RetryPlan(JobState.RUNNING)
    assert _pages(job_id)[1].state == PageState.FAILED
    assert jobs.retry_job("missing") is None


def test_retry_of_a_cancelled_job_requeues_its_cancelled_pages() -> None:
    job_id = _job(pages=3)
    jobs.complete_page(job_id, 1)
    jobs.complete_page(job_id, 2, error="bad")
    jobs.cancel_job(job_id)
    plan = jobs.retry_job(job_id)
    assert plan == jobs.RetryPlan(JobState.CANCELLED, pages=(2, 3))
    job = _row(job_id)
    assert job.state == JobState.RUNNING and (job.pages_done, job.pages_failed) == (1, 0)
    assert jobs.complete_page(job_id, 2) is False
    assert jobs.complete_page(job_id, 3) is True


def test_retry_of_a_job_that_never_opened_prepares_it_again() -> None:
    job_id = _job()
    jobs.begin_prepare(job_id)
    jobs.fail_job(job_id, "corrupt PDF")
    plan = jobs.retry_job(job_id)
    assert plan == jobs.RetryPlan(JobState.FAILED, prepare=True)
    job = _row(job_id)
    assert job.state == JobState.QUEUED and job.attempts == 0 and job.error is None
    again = jobs.begin_prepare(job_id)
    assert again is not None and again.attempts == 1
    # While it is queued again, a second retry does nothing.
    assert jobs.retry_job(job_id) == jobs.RetryPlan(JobState.QUEUED)


def test_retry_of_a_job_that_failed_in_assembly_assembles_again() -> None:
    job_id = _job(pages=1)
    jobs.complete_page(job_id, 1)
    jobs.fail_job(job_id, "assembly failed: boom")
    assert jobs.retry_job(job_id) == jobs.RetryPlan(JobState.FAILED, assemble=True)
    assert jobs.ready_for_assembly(job_id)
    assert jobs.begin_assemble(job_id) is not None


def test_batch_job_ids() -> None:
    batch_id = jobs.create_batch("b")
    ids = {_job(batch_id=batch_id), _job(batch_id=batch_id)}
    _job()
    assert set(jobs.batch_job_ids(batch_id) or []) == ids
    assert jobs.batch_job_ids(batch_id, tenant="other") is None
    assert jobs.batch_job_ids("missing") is None


def test_a_batch_is_cancelled_when_every_job_is() -> None:
    from collections import Counter

    from app.status import batch_state

    assert batch_state(Counter({"cancelled": 2})) == "cancelled"
    assert batch_state(Counter({"cancelled": 1, "succeeded": 1})) == "partial"
    assert batch_state(Counter({"cancelled": 1, "running": 1})) == "running"
    assert batch_state(Counter({"succeeded": 2})) == "succeeded"
    assert batch_state(Counter({"failed": 2})) == "failed"
