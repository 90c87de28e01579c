"""Shared fixtures: the real distributed stack (Postgres, Redis, SeaweedFS, worker
processes) once per session, and helpers to submit and wait."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import services

# Keep pagemill's own state of the test process out of the repository.
os.environ.setdefault("PAGEMILL_DATA_DIR", "/tmp/pagemill-tests-unset")
# Processes the tests start (`pagemill api`, workers, Flower) import this checkout's code,
# also when the virtualenv's editable install points at another checkout (a git worktree).
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(services.ROOT), os.environ.get("PYTHONPATH")) if p
)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pagemill")


@pytest.fixture(scope="session", autouse=True)
def _drop_test_brokers() -> Iterator[None]:
    yield
    services.drop_brokers()


@pytest.fixture(scope="session")
def s3(session_dir: Path) -> Iterator[services.SeaweedFS]:
    with services.seaweedfs(session_dir / "seaweedfs") as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with services.postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def stack_env(session_dir: Path, s3: services.SeaweedFS, postgres_url: str) -> dict[str, str]:
    """PAGEMILL_* for the distributed system: every part a real server on loopback."""
    env = {
        "PAGEMILL_DATABASE_URL": postgres_url,
        **services.broker_env("stack"),
        "PAGEMILL_S3_ENDPOINT": s3.endpoint,
        "PAGEMILL_S3_ACCESS_KEY": services.S3_KEY,
        "PAGEMILL_S3_SECRET_KEY": services.S3_SECRET,
        "PAGEMILL_S3_BUCKET": "pagemill-test",
        "PAGEMILL_DATA_DIR": str(session_dir / "stack"),
        "PAGEMILL_RETRY_BACKOFF_SECONDS": "0.5",
        # Workers serve no metrics port unless a test asks (sessions run side by side).
        "PAGEMILL_WORKER_METRICS_PORT": "0",
    }
    services.configure(env)
    from app.db import migrate

    migrate()
    return env


@pytest.fixture(scope="session")
def stack_workers(stack_env: dict[str, str], session_dir: Path) -> Iterator[dict[str, object]]:
    with services.workers(
        stack_env, {"cpu": 1, "gpu": 1}, log_dir=session_dir / "stack" / "logs"
    ) as processes:
        yield processes  # type: ignore[misc]


@pytest.fixture
def stack(stack_env: dict[str, str], stack_workers: dict[str, object]) -> dict[str, str]:
    """The running distributed stack, with this test process configured to use it."""
    services.configure(stack_env)
    return stack_env


def wait_for_jobs(job_ids: list[str], timeout: float = 240.0) -> dict[str, str]:
    """Polls the database until every job is finished; returns their states."""
    from app import jobs
    from app.models import JobState

    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {}
        for job_id in job_ids:
            job = jobs.get_job(job_id)
            assert job is not None, job_id
            states[job_id] = job.state
        if all(JobState(s).terminal for s in states.values()):
            return states
        time.sleep(0.3)
    raise TimeoutError(f"jobs not finished after {timeout} s: {states}")
