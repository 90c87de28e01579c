"""Leases, assembly deliveries and retry backoff: app.jobs on a real SQLite database
migrated by alembic (the fixtures of test_jobs_state)."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from app import jobs
from app.db import session_scope
from app.errors import (
    BrokerUnavailable,
    DatabaseUnavailable,
    DocumentError,
    EngineDead,
    EngineUnavailable,
    StorageError,
    TransientError,
    WorkHeld,
    translate,
)
from app.models import Job, JobState, Page, PageState, utcnow
from tests.unit.test_jobs_state import A4, migrated_template, sqlite_db  # noqa: F401

OTHER = "elsewhere:1:1"  # a holder on another machine


def _job(pages: int = 1) -> str:
    job_id = jobs.create_job(
        filename="doc.pdf", sha256="ab" * 32, size_bytes=1, media_type=None, options={}
    )
    jobs.set_pages(job_id, [A4] * pages)
    return job_id


def _page(job_id: str, number: int = 1) -> Page:
    with session_scope() as session:
        page = session.get(Page, (job_id, number))
        assert page is not None
        return page


def _hold_page(job_id: str, holder: str, heartbeat_age: float) -> None:
    with session_scope() as session:
        session.execute(
            update(Page)
            .where(Page.job_id == job_id)
            .values(held_by=holder, heartbeat_at=utcnow() - timedelta(seconds=heartbeat_age))
        )


def test_a_claim_takes_the_lease_and_a_duplicate_for_a_live_holder_is_dropped_uncounted() -> None:
    job_id = _job()
    before = utcnow()
    assert jobs.claim_page(job_id, 1) is not None
    page = _page(job_id)
    assert page.held_by == jobs.holder_id() and page.attempts == 1
    assert page.heartbeat_at is not None and page.heartbeat_at >= before
    assert page.updated_at is not None and page.updated_at >= before

    # Another thread of this process (the threads pool) is another holder.
    raised: list[BaseException] = []
    thread = threading.Thread(target=lambda: _claim_into(raised, job_id))
    thread.start()
    thread.join()
    assert len(raised) == 1 and isinstance(raised[0], WorkHeld)
    assert _page(job_id).attempts == 1, "a dropped duplicate used up an attempt"

    jobs.release(job_id, 1)
    assert _page(job_id).held_by is None


def _claim_into(raised: list[BaseException], job_id: str) -> None:
    try:
        jobs.claim_page(job_id, 1)
    except BaseException as exc:
        raised.append(exc)


def test_a_dead_holders_page_is_taken_over_and_counted() -> None:
    job_id = _job()
    _hold_page(job_id, OTHER, heartbeat_age=3600)  # older than the lease
    assert jobs.claim_page(job_id, 1) is not None
    assert _page(job_id).held_by == jobs.holder_id()
    assert _page(job_id).attempts == 1


def test_a_holder_process_gone_from_this_machine_is_dead_at_once() -> None:
    """A killed pool child's message comes back at once; it must not wait for the lease."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    job_id = _job()
    import socket

    _hold_page(job_id, f"{socket.gethostname()}:{gone.pid}:1", heartbeat_age=0)
    assert jobs.claim_recognition(job_id, 1) is not None


def test_a_finished_page_is_a_no_op_and_its_lease_is_gone() -> None:
    job_id = _job()
    jobs.claim_page(job_id, 1)
    jobs.complete_page(job_id, 1)
    page = _page(job_id)
    assert page.held_by is None and page.state == PageState.SUCCEEDED
    assert jobs.claim_page(job_id, 1) is None
    assert jobs.claim_recognition(job_id, 1) is None


def test_heartbeat_refreshes_only_what_the_holder_holds() -> None:
    job_id = _job(pages=2)
    jobs.claim_page(job_id, 1)
    with session_scope() as session:
        session.execute(
            update(Page)
            .values(heartbeat_at=utcnow() - timedelta(seconds=600), held_by=OTHER)
            .where(Page.job_id == job_id, Page.number == 2)
        )
        session.execute(
            update(Page)
            .values(heartbeat_at=utcnow() - timedelta(seconds=600))
            .where(Page.job_id == job_id, Page.number == 1)
        )
    jobs.heartbeat([jobs.holder_id()], [], [(job_id, 1), (job_id, 2)])
    fresh, other = _page(job_id, 1), _page(job_id, 2)
    assert fresh.heartbeat_at is not None and fresh.heartbeat_at > utcnow() - timedelta(seconds=5)
    assert other.heartbeat_at is not None and other.heartbeat_at < utcnow() - timedelta(seconds=500)


def test_recording_layout_with_regions_to_recognize_hands_the_page_on() -> None:
    """The recognizer may claim the page before the cpu task ends: the page must not look
    held by it."""
    job_id = _job()
    jobs.claim_page(job_id, 1)
    row = {"index": 0, "label": "text", "task": "text", "bbox": [0, 0, 1, 1], "state": "pending"}
    assert jobs.record_layout(job_id, 1, {}, [row]) == 1
    page = _page(job_id)
    assert page.state == PageState.RECOGNIZING and page.held_by is None


def test_state_changes_set_updated_at() -> None:
    job_id = _job()
    old = utcnow() - timedelta(days=1)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(updated_at=old))
        session.execute(update(Page).where(Page.job_id == job_id).values(updated_at=old))
    jobs.complete_page(job_id, 1, error="bad page")
    job = jobs.get_job(job_id)
    assert job is not None and job.updated_at is not None and job.updated_at > old
    assert (_page(job_id).updated_at or old) > old
    jobs.fail_job(job_id, "stop")
    job = jobs.get_job(job_id)
    assert job is not None and job.state == JobState.FAILED


def test_assembly_deliveries_are_counted_in_the_database_and_end() -> None:
    job_id = _job()
    jobs.complete_page(job_id, 1)
    for attempt in range(1, 4):  # task_max_attempts = 3
        assert jobs.begin_assemble(job_id) is not None
        job = jobs.get_job(job_id)
        assert job is not None and job.assemble_attempts == attempt
        jobs.note_job_error(job_id, "KeyError: 'x'")
        jobs.release(job_id)
    assert jobs.begin_assemble(job_id) is None
    job = jobs.get_job(job_id)
    assert job is not None and job.state == JobState.FAILED
    assert job.error == "assembly gave up after 3 deliveries: KeyError: 'x'"


def test_an_outage_gives_an_assembly_delivery_back() -> None:
    job_id = _job()
    jobs.complete_page(job_id, 1)
    jobs.begin_assemble(job_id)
    jobs.uncount_attempt(job_id, assemble=True)
    job = jobs.get_job(job_id)
    assert job is not None and job.assemble_attempts == 0 and job.attempts == 0


def test_library_errors_are_translated_into_one_hierarchy() -> None:
    import redis
    from kombu.exceptions import OperationalError as KombuError
    from sqlalchemy.exc import IntegrityError, OperationalError

    assert isinstance(
        translate(OperationalError("SELECT", {}, Exception("down"))), DatabaseUnavailable
    )
    assert isinstance(translate(KombuError("refused")), BrokerUnavailable)
    assert isinstance(translate(redis.ConnectionError("refused")), BrokerUnavailable)
    assert isinstance(translate(ConnectionResetError()), TransientError)
    integrity = IntegrityError("INSERT", {}, Exception("dup"))
    assert translate(integrity) is integrity, "a data error does not pass by waiting"
    for cls in (StorageError, EngineUnavailable, BrokerUnavailable, DatabaseUnavailable):
        assert issubclass(cls, TransientError)
    for cls in (DocumentError, EngineDead, WorkHeld):
        assert not issubclass(cls, TransientError)
    # Their old homes still work.
    from app.storage import StorageError as FromStorage
    from workers.documents import DocumentError as FromDocuments
    from workers.engines.base import EngineDead as FromBase

    assert (FromStorage, FromDocuments, FromBase) == (StorageError, DocumentError, EngineDead)


def test_retry_backoff_is_jittered_and_bounded() -> None:
    from workers.tasks import _backoff

    delays = [_backoff(3) for _ in range(50)]
    assert len(set(delays)) > 10, "every task stopped by an outage would return together"
    assert all(0 < d <= 60 for d in delays)
    assert all(_backoff(20) <= 60 for _ in range(20))


@pytest.mark.parametrize("stage", ["prepare", "assemble"])
def test_a_jobs_live_holder_drops_a_duplicate(stage: str) -> None:
    job_id = _job()
    if stage == "assemble":
        jobs.complete_page(job_id, 1)
    with session_scope() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(held_by=OTHER, heartbeat_at=utcnow())
        )
    begin = jobs.begin_assemble if stage == "assemble" else jobs.begin_prepare
    with pytest.raises(WorkHeld):
        begin(job_id)
    job = jobs.get_job(job_id)
    assert job is not None and job.attempts == 0 and job.assemble_attempts == 0
