"""Nothing is lost when a worker dies mid-task: the message goes back to the queue and the
work finishes once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import jobs
from app.db import session_scope
from app.models import Page, Region
from app.processes import child_pids
from app.submit import submit_file
from tests.conftest import wait_for_jobs
from tests.support import documents, services

pytestmark = pytest.mark.integration


def _page(job_id: str, number: int = 1) -> Page:
    with session_scope() as session:
        page = session.get(Page, (job_id, number))
        assert page is not None
        return page


def _recognize_attempts(job_id: str) -> int:
    with session_scope() as session:
        page = session.get(Page, (job_id, 1))
        return page.recognize_attempts if page is not None else 0


def _wait_until(condition: object, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError("condition not met")


@pytest.fixture
def fault_env(stack_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """The stack's database and storage with a broker of its own, so killing these workers
    touches no other test; a short visibility timeout so a dead worker's message returns
    within seconds."""
    env = {
        **stack_env,
        **services.broker_env("faults"),
        "PAGEMILL_BROKER_VISIBILITY_TIMEOUT": "8",
        "PAGEMILL_DATA_DIR": str(tmp_path / "data"),
    }
    services.configure(env)
    yield env
    services.configure(stack_env)


def _dense_scan(tmp_path: Path) -> Path:
    lines = [
        f"Line {i} of a dense page that keeps the recognizer busy for a while." for i in range(28)
    ]
    return documents.make_scanned_pdf(tmp_path / "dense.pdf", [(None, lines)])


def test_recognition_child_killed_mid_task_is_redelivered(
    fault_env: dict[str, str], tmp_path: Path
) -> None:
    with services.workers(fault_env, {"cpu": 1, "gpu": 1}, log_dir=tmp_path) as workers:
        job_id = submit_file(_dense_scan(tmp_path)).job_id
        _wait_until(lambda: _recognize_attempts(job_id) >= 1)
        (child,) = child_pids(workers["gpu"].pid)
        os.kill(child, signal.SIGKILL)
        assert wait_for_jobs([job_id]) == {job_id: "succeeded"}
    page = _page(job_id)
    assert page.recognize_attempts >= 2, "the killed delivery was not counted"
    with session_scope() as session:
        regions = session.query(Region).filter_by(job_id=job_id).all()
    assert regions and all(r.state == "done" for r in regions)
    assert "Line 7" in " ".join(r.content or "" for r in regions)
    job = jobs.get_job(job_id)
    assert job is not None and job.pages_done == 1, "the page was counted twice"


def test_whole_worker_killed_its_message_returns_after_the_visibility_timeout(
    fault_env: dict[str, str], tmp_path: Path
) -> None:
    with services.workers(fault_env, {"cpu": 1}, log_dir=tmp_path / "a") as first:
        job_id = submit_file(_dense_scan(tmp_path)).job_id
        with services.workers(fault_env, {"gpu": 1}, log_dir=tmp_path / "b") as gpu:
            _wait_until(lambda: _recognize_attempts(job_id) >= 1)
            os.killpg(gpu["gpu"].pid, signal.SIGKILL)  # the machine is gone: no goodbye
            gpu["gpu"].wait(10)
        assert _page(job_id).state == "recognizing"
        with services.workers(fault_env, {"gpu": 1}, log_dir=tmp_path / "c"):
            assert wait_for_jobs([job_id], timeout=180) == {job_id: "succeeded"}
        assert first["cpu"].poll() is None
    assert _page(job_id).recognize_attempts >= 2
    job = jobs.get_job(job_id)
    assert job is not None and job.pages_done == 1
