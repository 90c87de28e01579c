"""A page whose worker died shows it in the status (lease "lost": the sweeper re-sends it),
instead of a plain `running` with nothing to say why."""

from __future__ import annotations

from datetime import timedelta

from app.models import Job, JobState, Page, PageState, utcnow
from app.status import job_out


def _job(*pages: Page) -> Job:
    job = Job(
        id="a" * 32,
        tenant="default",
        filename="f.pdf",
        content_sha256="0" * 64,
        size_bytes=1,
        options={},
        state=JobState.RUNNING,
        pages_total=len(pages),
        pages_done=0,
        pages_failed=0,
        created_at=utcnow(),
    )
    job.pages = list(pages)
    return job


def _page(number: int, held_by: str | None, beat_seconds_ago: float | None) -> Page:
    beat = None if beat_seconds_ago is None else utcnow() - timedelta(seconds=beat_seconds_ago)
    return Page(
        job_id="a" * 32,
        number=number,
        state=PageState.RUNNING if held_by else PageState.QUEUED,
        attempts=1,
        held_by=held_by,
        heartbeat_at=beat,
    )


def test_pages_show_whether_their_worker_still_holds_them() -> None:
    job = _job(_page(1, "host:1:t", 5), _page(2, "host:2:t", 3600), _page(3, None, None))
    pages = job_out(job, with_pages=True).pages
    assert pages is not None
    assert [p.lease for p in pages] == ["held", "lost", None]
    assert pages[1].heartbeat_at is not None and pages[2].heartbeat_at is None
