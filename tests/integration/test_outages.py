"""Nothing is lost when a service goes away mid-batch: Redis restarted (with its data, and
empty), Postgres restarted, the S3 server stopped for 30 s, a whole cpu worker or gpu worker
killed. Each test owns the service it breaks, runs a batch of ten pages through supervised
`pagemill worker` processes and a real `pagemill sweeper`, and checks that every job
succeeds with every region stored once, within minutes (the broker's visibility timeout
stays at its hour: nothing may wait for it)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.db import session_scope
from app.models import Page, PageState, Region
from app.schemas import JobOptions
from app.submit import submit_file
from tests.conftest import wait_for_jobs
from tests.support import documents, private, services

pytestmark = pytest.mark.integration

PAGES = 10
# Short clocks so a test takes seconds, not the production minute.
CLOCKS = {
    "PAGEMILL_RETRY_BACKOFF_SECONDS": "0.5",
    "PAGEMILL_HEARTBEAT_SECONDS": "2",
    "PAGEMILL_LEASE_SECONDS": "10",
    "PAGEMILL_STUCK_AFTER_SECONDS": "15",
    "PAGEMILL_ASSEMBLY_GRACE_SECONDS": "10",
    "PAGEMILL_SWEEP_INTERVAL_SECONDS": "2",
    "PAGEMILL_SEND_RETRY_SECONDS": "3",  # shorter than the outages: the retry path is used
}
DEADLINE = 300.0  # seconds for the batch to end after the outage


def _documents(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        documents.make_scanned_pdf(
            folder / f"doc{i}.pdf",
            [(None, [f"Document {i} line {n} of a short test page." for n in range(3)])],
        )
        for i in range(PAGES)
    ]


def _base_env(tmp_path: Path, s3: services.SeaweedFS) -> dict[str, str]:
    return {
        "PAGEMILL_S3_ENDPOINT": s3.endpoint,
        "PAGEMILL_S3_ACCESS_KEY": services.S3_KEY,
        "PAGEMILL_S3_SECRET_KEY": services.S3_SECRET,
        "PAGEMILL_S3_BUCKET": "pagemill-outages",
        "PAGEMILL_DATA_DIR": str(tmp_path / "data"),
        "PAGEMILL_WORKER_METRICS_PORT": "0",
        **CLOCKS,
    }


@contextmanager
def _database(env: dict[str, str], url: str | None = None) -> Iterator[dict[str, str]]:
    """A fresh database (the sweeper sees only this test's work), migrated."""
    with ExitStack() as stack:
        if url is None:
            url = stack.enter_context(services.postgres_database())
        env = {**env, "PAGEMILL_DATABASE_URL": url}
        services.configure(env)
        from app.db import migrate

        migrate()
        yield env


@contextmanager
def _deployment(env: dict[str, str], logs: Path, *, supervised: bool = True) -> Iterator[None]:
    """The sweeper and, when supervised, one `pagemill worker cpu` and one `pagemill worker
    gpu` (a killed-worker test starts its own workers to kill)."""
    services.configure(env)
    commands = [(["sweeper"], logs / "sweeper.log")]
    if supervised:
        for role in ("cpu", "gpu"):
            commands.append((["worker", role, "--concurrency", "1"], logs / f"{role}.log"))
    with services.pagemill_processes(env, commands):
        yield


def _submit(paths: list[Path]) -> list[str]:
    from app import jobs

    batch = jobs.create_batch("outage")
    small = JobOptions(dpi=100)  # cheap pages: the test is about the outage, not the OCR
    return [submit_file(path, batch_id=batch, options=small).job_id for path in paths]


def _pages_where(job_ids: list[str], *conditions: object) -> int:
    with session_scope() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Page).where(Page.job_id.in_(job_ids), *conditions)  # type: ignore[arg-type]
            )
            or 0
        )


def _wait(condition: Callable[[], bool], what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # the database may be the service that is down
            pass
        time.sleep(0.2)
    raise TimeoutError(what)


def _mid_batch(job_ids: list[str]) -> None:
    """Waits until the batch is under way: some pages finished, others not."""
    _wait(
        lambda: _pages_where(job_ids, Page.state == PageState.SUCCEEDED) >= 2,
        "the batch did not get going",
    )
    assert _pages_where(job_ids, Page.state == PageState.SUCCEEDED) < PAGES, "batch too fast"


def _check(job_ids: list[str]) -> None:
    """Every job succeeded, every region stored exactly once, nothing left running."""
    started = time.monotonic()
    states = wait_for_jobs(job_ids, timeout=DEADLINE)
    print(f"batch ended {time.monotonic() - started:.1f} s after the service came back")
    assert set(states.values()) == {"succeeded"}, states
    with session_scope() as session:
        duplicates = session.execute(
            select(Region.job_id, Region.page_number, Region.index)
            .where(Region.job_id.in_(job_ids))
            .group_by(Region.job_id, Region.page_number, Region.index)
            .having(func.count() > 1)
        ).all()
        assert duplicates == []
        pages = session.scalars(select(Page).where(Page.job_id.in_(job_ids))).all()
        assert len(pages) == PAGES
        for page in pages:
            stored = session.scalar(
                select(func.count())
                .select_from(Region)
                .where(Region.job_id == page.job_id, Region.page_number == page.number)
            )
            assert page.state == PageState.SUCCEEDED and page.held_by is None
            assert page.regions_total == stored and stored, (page.job_id, page.number)
    from app import jobs

    for job_id in job_ids:
        job = jobs.get_job(job_id)
        assert job is not None and job.pages_done == job.pages_total == 1


# -- the broker ------------------------------------------------------------------------------


@pytest.mark.parametrize("persistent", [True, False], ids=["with-its-data", "empty"])
def test_redis_restarted_mid_batch(
    persistent: bool, tmp_path: Path, s3: services.SeaweedFS, postgres_url: str
) -> None:
    """Killed and started again after 6 s on the same port and folder. Empty, every message
    is gone (queued, held, unacknowledged): only the sweeper can find the work again."""
    with (
        private.redis_server(tmp_path / "redis", persistent=persistent) as redis,
        _database({**_base_env(tmp_path, s3), "PAGEMILL_BROKER_URL": redis.url}) as env,
        _deployment(env, tmp_path / "logs"),
    ):
        job_ids = _submit(_documents(tmp_path / "docs"))
        _mid_batch(job_ids)
        redis.kill()
        time.sleep(6)
        redis.start()
        _check(job_ids)


# -- the database ----------------------------------------------------------------------------


def test_postgres_restarted_mid_batch(tmp_path: Path, s3: services.SeaweedFS) -> None:
    with private.postgres_cluster() as cluster:
        url = cluster.create_database("pagemill")
        env = {**_base_env(tmp_path, s3), **services.broker_env(f"pg-{uuid.uuid4().hex[:6]}")}
        with _database(env, url) as env, _deployment(env, tmp_path / "logs"):
            job_ids = _submit(_documents(tmp_path / "docs"))
            _mid_batch(job_ids)
            cluster.pg_ctl("stop", "-m", "fast")
            time.sleep(5)
            cluster.pg_ctl("start")
            _check(job_ids)


# -- storage ---------------------------------------------------------------------------------


def test_s3_stopped_for_30_seconds_mid_batch(tmp_path: Path) -> None:
    with services.seaweedfs(tmp_path / "seaweedfs") as own_s3:
        env = {
            **_base_env(tmp_path, own_s3),
            **services.broker_env(f"s3-{uuid.uuid4().hex[:6]}"),
        }
        with _database(env) as env, _deployment(env, tmp_path / "logs"):
            job_ids = _submit(_documents(tmp_path / "docs"))
            _mid_batch(job_ids)
            own_s3.stop()
            time.sleep(30)
            own_s3.start()
            _check(job_ids)


# -- workers ---------------------------------------------------------------------------------


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the worker and its pool: the machine is gone, nothing says goodbye."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def _held(job_ids: list[str], state: PageState) -> Callable[[], bool]:
    return lambda: _pages_where(job_ids, Page.state == state, Page.held_by.is_not(None)) > 0


def test_a_whole_cpu_worker_killed_mid_page_and_restarted_at_once(
    tmp_path: Path, s3: services.SeaweedFS
) -> None:
    """Its page and the message it had reserved stay unacknowledged in Redis for the
    visibility timeout (an hour); the lease and the sweeper bring them back in seconds."""
    env = {**_base_env(tmp_path, s3), **services.broker_env(f"cpu-{uuid.uuid4().hex[:6]}")}
    with (
        _database(env) as env,
        _deployment(env, tmp_path / "logs", supervised=False),
        services.workers(env, {"gpu": 1}, log_dir=tmp_path / "gpu"),
    ):
        with services.workers(env, {"cpu": 1}, log_dir=tmp_path / "cpu-a") as first:
            job_ids = _submit(_documents(tmp_path / "docs"))
            _mid_batch(job_ids)
            _wait(_held(job_ids, PageState.RUNNING), "no page in the middle of its cpu work")
            _kill_group(first["cpu"])
        with services.workers(env, {"cpu": 1}, log_dir=tmp_path / "cpu-b"):
            _check(job_ids)


def test_a_gpu_worker_killed_mid_recognize_and_restarted_at_once(
    tmp_path: Path, s3: services.SeaweedFS
) -> None:
    env = {**_base_env(tmp_path, s3), **services.broker_env(f"gpu-{uuid.uuid4().hex[:6]}")}
    with (
        _database(env) as env,
        _deployment(env, tmp_path / "logs", supervised=False),
        services.workers(env, {"cpu": 1}, log_dir=tmp_path / "cpu"),
    ):
        with services.workers(env, {"gpu": 1}, log_dir=tmp_path / "gpu-a") as first:
            job_ids = _submit(_documents(tmp_path / "docs"))
            _mid_batch(job_ids)
            _wait(_held(job_ids, PageState.RECOGNIZING), "no page in the middle of recognition")
            _kill_group(first["gpu"])
        with services.workers(env, {"gpu": 1}, log_dir=tmp_path / "gpu-b"):
            _check(job_ids)
