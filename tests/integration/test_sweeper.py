"""The sweeper (app.sweeper) on real Redis and Postgres, one rule at a time: it re-sends what
cannot be in the broker, fails what ran out of deliveries, and leaves deep queues alone."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import update

from app import jobs
from app.db import session_scope
from app.models import Job, JobState, Page, PageState, utcnow
from app.queue import PAGE, send
from app.sweeper import MARKER_KEY, Sweeper
from tests.support import services

pytestmark = pytest.mark.integration

A4 = jobs.PageSize(595.0, 842.0)


@pytest.fixture
def sweep_env(stack_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """A database and a broker of its own (nothing consumes it): a sweep sees only what the
    test made."""
    with services.postgres_database() as url:
        env = _env(stack_env, url, tmp_path)
        services.configure(env)
        from app.db import migrate

        migrate()
        yield env
        services.configure(stack_env)


def _env(stack_env: dict[str, str], database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **stack_env,
        "PAGEMILL_DATABASE_URL": database_url,
        **services.broker_env(f"sweeper-{tmp_path.name}"),
        "PAGEMILL_DATA_DIR": str(tmp_path / "data"),
        "PAGEMILL_LEASE_SECONDS": "5",
        "PAGEMILL_STUCK_AFTER_SECONDS": "5",
        "PAGEMILL_ASSEMBLY_GRACE_SECONDS": "5",
    }


def _client() -> redis.Redis:
    from app.settings import get_settings

    return redis.Redis.from_url(get_settings().resolved_broker_url)


def _queued(queue: str) -> list[tuple[str, list[Any]]]:
    """The (task, args) of every message waiting in a queue of this test's broker."""
    from app.settings import get_settings

    raw = _client().lrange(get_settings().broker_key_prefix + queue, 0, -1)
    out = []
    for item in reversed(raw):
        message = json.loads(item)
        args = json.loads(base64.b64decode(message["body"]))[0]
        out.append((message["headers"]["task"], args))
    return out


def _job(pages: int | None = None) -> str:
    job_id = jobs.create_job(
        filename="doc.pdf", sha256="ab" * 32, size_bytes=1, media_type=None, options={}
    )
    if pages:
        jobs.set_pages(job_id, [A4] * pages)
    return job_id


def _age_job(job_id: str, seconds: float, **values: Any) -> None:
    then = utcnow() - timedelta(seconds=seconds)
    with session_scope() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(created_at=then, updated_at=then, **values)
        )


def _age_page(job_id: str, number: int, seconds: float, **values: Any) -> None:
    then = utcnow() - timedelta(seconds=seconds)
    with session_scope() as session:
        session.execute(
            update(Page)
            .where(Page.job_id == job_id, Page.number == number)
            .values(updated_at=then, **values)
        )


def test_a_queued_job_whose_message_never_reached_the_broker_is_sent_once(
    sweep_env: dict[str, str],
) -> None:
    sweeper = Sweeper()
    job_id = _job()  # created, never sent: the submitter died before the send
    assert sweeper.sweep() == {}, "a job younger than stuck_after is left alone"
    _age_job(job_id, 60)
    assert sweeper.sweep() == {"prepare_resent": 1}
    assert _queued("cpu") == [("pagemill.prepare", [job_id])]
    assert sweeper.sweep() == {}, "sent again before its time was up"
    assert len(_queued("cpu")) == 1


def test_work_waiting_in_a_deep_queue_is_not_sent_again(sweep_env: dict[str, str]) -> None:
    sweeper = Sweeper()
    job_id = _job(pages=2)
    _age_page(job_id, 1, 60)
    send(PAGE, "some-other-job", 1)  # the queue is not empty: its message may be in it
    assert sweeper.sweep() == {}
    assert _queued("cpu") == [("pagemill.page", ["some-other-job", 1])]


def test_a_dead_holders_work_is_sent_again_and_what_ran_out_of_deliveries_fails(
    sweep_env: dict[str, str],
) -> None:
    sweeper = Sweeper()
    job_id = _job(pages=3)
    dead = {"held_by": "gone-host:1:1", "heartbeat_at": utcnow() - timedelta(seconds=60)}
    _age_page(job_id, 1, 60, state=PageState.RUNNING, attempts=1, **dead)
    _age_page(job_id, 2, 60, state=PageState.RECOGNIZING, recognize_attempts=1, **dead)
    _age_page(job_id, 3, 60, state=PageState.RUNNING, attempts=3, error="boom", **dead)
    send(PAGE, "keeps-the-queue-busy", 1)  # leases do not depend on the queue's depth
    counts = sweeper.sweep()
    assert counts == {"pages_resent": 1, "recognize_resent": 1, "pages_failed": 1}
    assert ("pagemill.page", [job_id, 1]) in _queued("cpu")
    assert _queued("gpu") == [("pagemill.recognize", [job_id, 2])]
    with session_scope() as session:
        failed = session.get(Page, (job_id, 3))
        resent = session.get(Page, (job_id, 1))
        assert failed is not None and resent is not None
        assert failed.state == PageState.FAILED
        assert failed.error == "gave up after 3 deliveries: boom"
        assert resent.held_by is None and resent.state == PageState.RUNNING
    job = jobs.get_job(job_id)
    assert job is not None and job.pages_done == 1 and job.pages_failed == 1


def test_a_live_holders_work_is_left_alone(sweep_env: dict[str, str]) -> None:
    job_id = _job(pages=1)
    live = {"held_by": "busy-host:1:1", "heartbeat_at": utcnow()}
    _age_page(job_id, 1, 600, state=PageState.RUNNING, attempts=1, **live)
    assert Sweeper().sweep() == {}


def test_a_job_not_assembled_after_the_grace_period_gets_assemble_again(
    sweep_env: dict[str, str],
) -> None:
    job_id = _job(pages=1)
    jobs.complete_page(job_id, 1)  # ...and the assemble message was lost
    sweeper = Sweeper()
    assert sweeper.sweep() == {}
    _age_job(job_id, 60)
    assert sweeper.sweep() == {"assemble_resent": 1}
    assert _queued("cpu") == [("pagemill.assemble", [job_id])]


def test_a_dead_assembler_out_of_deliveries_fails_the_job(sweep_env: dict[str, str]) -> None:
    job_id = _job(pages=1)
    jobs.complete_page(job_id, 1)
    dead = {"held_by": "gone-host:1:1", "heartbeat_at": utcnow() - timedelta(seconds=60)}
    _age_job(job_id, 60, state=JobState.ASSEMBLING, assemble_attempts=3, **dead)
    assert Sweeper().sweep() == {"jobs_failed": 1}
    job = jobs.get_job(job_id)
    assert job is not None and job.state == JobState.FAILED
    assert job.error == "assembly gave up after 3 deliveries: its worker was lost each time"


def test_when_the_broker_lost_its_data_everything_waiting_is_sent_at_once(
    sweep_env: dict[str, str],
) -> None:
    sweeper = Sweeper()
    assert sweeper.sweep() == {}  # writes the marker
    queued = _job()
    running = _job(pages=2)
    _age_page(running, 2, 0, state=PageState.RECOGNIZING)
    send(PAGE, "unrelated", 1)
    assert sweeper.sweep() == {}, "young work in a busy queue is left alone"
    _client().delete(*_client().keys(sweep_env["PAGEMILL_BROKER_KEY_PREFIX"] + "*"))
    counts = sweeper.sweep()
    assert counts == {"prepare_resent": 1, "pages_resent": 1, "recognize_resent": 1}
    assert sorted(_queued("cpu")) == [
        ("pagemill.page", [running, 1]),
        ("pagemill.prepare", [queued]),
    ]
    assert _queued("gpu") == [("pagemill.recognize", [running, 2])]
    assert _client().exists(sweep_env["PAGEMILL_BROKER_KEY_PREFIX"] + MARKER_KEY)
    assert sweeper.sweep() == {}, "recovery ends when everything waiting was sent"


def test_pagemill_sweeper_once_does_one_pass(sweep_env: dict[str, str]) -> None:
    import os
    import subprocess
    import sys

    job_id = _job()
    _age_job(job_id, 60)
    out = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "sweeper", "--once"],
        cwd=services.ROOT,
        env={**os.environ, **sweep_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"prepare_resent": 1}
    assert _queued("cpu") == [("pagemill.prepare", [job_id])]
