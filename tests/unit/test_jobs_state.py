"""app.jobs: every state change, each safe to repeat (Celery delivers at least once).

Runs on a real SQLite file database migrated by alembic, as embedded mode does.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app import jobs
from app.db import migrate, session_scope
from app.models import Job, JobState, Page, PageState
from tests.support import services

A4 = jobs.PageSize(595.0, 842.0)


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One database migrated by alembic per module; each test gets a copy of its files."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("PAGEMILL_")}
    folder = tmp_path_factory.mktemp("template")
    services.configure({"PAGEMILL_DATA_DIR": str(folder)})
    migrate()
    services.configure(saved)  # drops the cached engine, closing its connections
    yield folder


@pytest.fixture(autouse=True)
def sqlite_db(migrated_template: Path, tmp_path: Path) -> Iterator[Path]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("PAGEMILL_")}
    for path in migrated_template.glob("pagemill.db*"):
        shutil.copy(path, tmp_path / path.name)
    services.configure({"PAGEMILL_DATA_DIR": str(tmp_path)})
    yield tmp_path / "pagemill.db"
    services.configure(saved)


def _job(pages: int | None = None) -> str:
    job_id = jobs.create_job(
        filename="doc.pdf",
        sha256="ab" * 32,
        size_bytes=123,
        media_type="application/pdf",
        options={"text_mode": "ocr"},
    )
    if pages is not None:
        jobs.set_pages(job_id, [A4] * pages)
    return job_id


def _job_row(job_id: str) -> Job:
    job = jobs.get_job(job_id)
    assert job is not None
    return job


def _page_count(job_id: str) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Page).where(Page.job_id == job_id))


def test_the_database_is_the_sqlite_file(sqlite_db: Path) -> None:
    job_id = _job()
    with closing(sqlite3.connect(sqlite_db)) as conn:
        rows = conn.execute("SELECT id, state FROM jobs").fetchall()
    assert rows == [(job_id, "queued")]


def test_create_job_and_batch() -> None:
    batch_id = jobs.create_batch("nightly")
    job_id = jobs.create_job(
        filename="scan.png",
        sha256="cd" * 32,
        size_bytes=9,
        media_type="image/png",
        options={},
        batch_id=batch_id,
    )
    job = _job_row(job_id)
    assert job.state == JobState.QUEUED
    assert job.batch_id == batch_id and job.filename == "scan.png"
    assert job.pages_total is None and job.pages_done == 0 and job.attempts == 0
    assert job.created_at is not None and job.finished_at is None
    assert jobs.get_job("missing") is None


def test_begin_prepare_counts_deliveries() -> None:
    job_id = _job()
    first = jobs.begin_prepare(job_id)
    second = jobs.begin_prepare(job_id)
    assert first is not None and second is not None
    assert (first.attempts, second.attempts) == (1, 2)
    assert second.started_at == first.started_at  # set once
    assert jobs.begin_prepare("missing") is None


def test_set_pages_is_idempotent() -> None:
    job_id = _job()
    assert jobs.set_pages(job_id, [A4, A4, A4]) == [1, 2, 3]
    assert jobs.set_pages(job_id, [A4, A4, A4]) == [1, 2, 3]
    assert _page_count(job_id) == 3
    job = _job_row(job_id)
    assert job.state == JobState.RUNNING and job.pages_total == 3

    # A redelivered prepare after page 2 finished re-sends only the pages still to do.
    jobs.complete_page(job_id, 2)
    assert jobs.set_pages(job_id, [A4, A4, A4]) == [1, 3]
    assert _page_count(job_id) == 3
    assert _job_row(job_id).pages_done == 1


def test_claim_page_counts_attempts_and_skips_finished_pages() -> None:
    job_id = _job(pages=2)
    first = jobs.claim_page(job_id, 1)
    assert first is not None and first.attempts == 1 and first.state == PageState.RUNNING
    again = jobs.claim_page(job_id, 1)
    assert again is not None and again.attempts == 2
    assert again.started_at == first.started_at

    jobs.complete_page(job_id, 1)
    assert jobs.claim_page(job_id, 1) is None
    jobs.complete_page(job_id, 2, error="render failed")
    assert jobs.claim_page(job_id, 2) is None
    assert jobs.claim_page(job_id, 99) is None


def test_complete_page_counts_each_page_once() -> None:
    job_id = _job(pages=2)
    assert jobs.complete_page(job_id, 1, recognize_ms=12.5) is False
    assert jobs.complete_page(job_id, 1) is False  # redelivered: not counted again
    job = _job_row(job_id)
    assert job.pages_done == 1 and job.pages_failed == 0
    assert not jobs.ready_for_assembly(job_id)
    assert jobs.begin_assemble(job_id) is None  # not every page is finished

    assert jobs.complete_page(job_id, 2, error="layout crashed") is True  # the last page
    # Redelivered completion of the last page while the job is not finished: still True,
    # so an `assemble` lost in a crash is sent again; the counters do not move.
    assert jobs.complete_page(job_id, 2, error="layout crashed") is True
    assert jobs.complete_page(job_id, 1) is True
    job = _job_row(job_id)
    assert job.pages_done == 2 and job.pages_failed == 1
    assert jobs.ready_for_assembly(job_id)

    with session_scope() as session:
        pages = {p.number: p for p in session.scalars(select(Page).where(Page.job_id == job_id))}
    assert pages[1].state == PageState.SUCCEEDED and pages[1].recognize_ms == 12.5
    assert pages[1].error is None and pages[1].finished_at is not None
    assert pages[2].state == PageState.FAILED and pages[2].error == "layout crashed"

    assert jobs.finish_job(job_id, "md", "json") == JobState.PARTIAL
    assert jobs.complete_page(job_id, 2) is False  # the job is finished
    assert not jobs.ready_for_assembly(job_id)


def test_complete_page_of_unknown_job() -> None:
    assert jobs.complete_page("missing", 1) is False


def test_finish_job_succeeded() -> None:
    job_id = _job(pages=2)
    jobs.complete_page(job_id, 1)
    jobs.complete_page(job_id, 2)
    assembling = jobs.begin_assemble(job_id)
    assert assembling is not None and assembling.state == JobState.ASSEMBLING
    assert [p.number for p in assembling.pages] == [1, 2]
    assert jobs.finish_job(job_id, "results/x/document.md", "results/x/document.json") == (
        JobState.SUCCEEDED
    )
    job = _job_row(job_id)
    assert job.state == JobState.SUCCEEDED and job.error is None
    assert job.result_markdown_key == "results/x/document.md"
    assert job.result_json_key == "results/x/document.json"
    assert job.finished_at is not None
    assert jobs.begin_assemble(job_id) is None  # finished: nothing to assemble


def test_finish_job_partial() -> None:
    job_id = _job(pages=3)
    jobs.complete_page(job_id, 1)
    jobs.complete_page(job_id, 2, error="bad page")
    jobs.complete_page(job_id, 3)
    assert jobs.finish_job(job_id, "md", "json") == JobState.PARTIAL
    job = _job_row(job_id)
    assert job.state == JobState.PARTIAL and job.error == "1 of 3 pages failed"
    assert job.result_markdown_key == "md"


def test_finish_job_failed_when_every_page_failed() -> None:
    job_id = _job(pages=2)
    jobs.complete_page(job_id, 1, error="bad")
    jobs.complete_page(job_id, 2, error="bad")
    assert jobs.finish_job(job_id, None, None) == JobState.FAILED
    job = _job_row(job_id)
    assert job.state == JobState.FAILED and job.error == "every page failed"


def test_finish_job_is_idempotent() -> None:
    job_id = _job(pages=1)
    jobs.complete_page(job_id, 1)
    assert jobs.finish_job(job_id, "md-1", "json-1") == JobState.SUCCEEDED
    finished_at = _job_row(job_id).finished_at
    assert jobs.finish_job(job_id, "md-2", "json-2") == JobState.SUCCEEDED
    job = _job_row(job_id)
    assert job.result_markdown_key == "md-1" and job.finished_at == finished_at
    with pytest.raises(LookupError):
        jobs.finish_job("missing", None, None)


def test_fail_job() -> None:
    job_id = _job()
    jobs.fail_job(job_id, "corrupt PDF")
    job = _job_row(job_id)
    assert job.state == JobState.FAILED and job.error == "corrupt PDF"
    assert job.finished_at is not None
    assert jobs.begin_prepare(job_id) is None  # a failed job is not prepared again
    assert jobs.set_pages(job_id, [A4]) == []
    assert _page_count(job_id) == 0


def test_fail_job_does_not_change_a_finished_job() -> None:
    job_id = _job(pages=1)
    jobs.complete_page(job_id, 1)
    jobs.finish_job(job_id, "md", "json")
    finished_at = _job_row(job_id).finished_at
    jobs.fail_job(job_id, "late failure from a redelivered message")
    job = _job_row(job_id)
    assert job.state == JobState.SUCCEEDED and job.error is None
    assert job.finished_at == finished_at

    failed = _job()
    jobs.fail_job(failed, "first reason")
    jobs.fail_job(failed, "second reason")
    assert _job_row(failed).error == "first reason"


def test_note_page_error_only_on_unfinished_pages() -> None:
    job_id = _job(pages=2)
    jobs.note_page_error(job_id, 1, "x" * 5000)
    jobs.complete_page(job_id, 2)
    jobs.note_page_error(job_id, 2, "too late")
    with session_scope() as session:
        pages = {p.number: p for p in session.scalars(select(Page).where(Page.job_id == job_id))}
    assert pages[1].error == "x" * 4000 and pages[1].state == PageState.QUEUED
    assert pages[2].error is None


def test_record_layout_replaces_regions_and_results_upsert() -> None:
    job_id = _job(pages=1)
    region = {"label": "text", "task": "text", "bbox": [0, 0, 10, 10]}
    done = {**region, "state": "done", "content": "kept", "source": "text_layer"}
    assert jobs.record_layout(job_id, 1, {"width_px": 100}, [{**region, "index": 0}]) == 1
    # A redelivered page message replaces the regions instead of adding to them.
    pending = jobs.record_layout(
        job_id, 1, {"width_px": 100}, [{**region, "index": 0}, {**done, "index": 1}]
    )
    assert pending == 1
    claim = jobs.claim_recognition(job_id, 1)
    assert claim is not None and claim.attempts == 1
    assert [r.index for r in claim.regions] == [0]

    result = {"index": 0, "state": "done", "content": "hello", "source": "ocr"}
    jobs.record_region_results(job_id, 1, [result])
    jobs.record_region_results(job_id, 1, [result])  # redelivered: same content
    claim = jobs.claim_recognition(job_id, 1)
    assert claim is not None and claim.attempts == 2 and claim.regions == []
    with session_scope() as session:
        page = session.get(Page, (job_id, 1))
        assert page is not None
        assert page.regions_total == 2 and page.width_px == 100
        assert [(r.index, r.content) for r in page.regions] == [(0, "hello"), (1, "kept")]


def test_timestamps_read_back_are_utc_aware() -> None:
    """The columns are DateTime(timezone=True); on Postgres they come back aware. On SQLite
    they must too, or the API and `status --json` show local-looking times in embedded mode."""
    job_id = _job(pages=1)
    jobs.begin_prepare(job_id)
    job = _job_row(job_id)
    for value in (job.created_at, job.started_at):
        assert value is not None
        assert value.utcoffset() == timedelta(0), f"naive or non-UTC timestamp: {value!r}"
        assert abs(value - datetime.now(UTC)) < timedelta(hours=1)
