"""Cancel and retry end to end: a real API process, the `pagemill` command, real Celery
workers on Redis, Postgres and SeaweedFS."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app import control, jobs
from app.db import session_scope
from app.models import Job, JobState, Page, PageState, Region
from app.storage import result_key, work_prefix
from app.submit import submit_file
from tests.conftest import wait_for_jobs
from tests.support import documents, services

pytestmark = pytest.mark.integration

PAGEMILL = str(Path(sys.executable).parent / "pagemill")
TIMEOUT = 900.0  # a guard against hangs on a loaded machine, not a timing check


@pytest.fixture(scope="module")
def env(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The stack's database and storage with a broker of its own: the workers each test
    starts (some with a limit that makes work fail) touch no other test."""
    env = {
        **stack_env,
        **services.broker_env("cancel-retry"),
        "PAGEMILL_DATA_DIR": str(tmp_path_factory.mktemp("cancel-retry")),
    }
    services.configure(env)
    yield env
    services.configure(stack_env)


@pytest.fixture(scope="module")
def api(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    key = services.api_key(env, name="cancel-retry tests")
    log_path = tmp_path_factory.mktemp("api") / "api.log"
    with (
        services.api_server(env, log_path) as url,
        httpx.Client(base_url=url, timeout=60, headers=services.bearer(key)) as client,
    ):
        yield client


def pagemill(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PAGEMILL, *args],
        env=services.process_env(env),
        capture_output=True,
        text=True,
        timeout=300,
    )


# -- helpers ---------------------------------------------------------------------------


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def _job(job_id: str) -> Job:
    job = jobs.get_job(job_id)
    assert job is not None
    return job


def _pages(job_id: str) -> dict[int, Page]:
    with session_scope() as session:
        rows = session.scalars(select(Page).where(Page.job_id == job_id))
        return {page.number: page for page in rows}


def _regions(job_id: str) -> list[Region]:
    with session_scope() as session:
        return list(session.scalars(select(Region).where(Region.job_id == job_id)))


def _keys(env: dict[str, str], prefix: str) -> list[str]:
    """Every object under `prefix` in the test bucket, listed with S3 itself."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=env["PAGEMILL_S3_ENDPOINT"],
        aws_access_key_id=env["PAGEMILL_S3_ACCESS_KEY"],
        aws_secret_access_key=env["PAGEMILL_S3_SECRET_KEY"],
        region_name="us-east-1",
    )
    found = client.list_objects_v2(Bucket=env["PAGEMILL_S3_BUCKET"], Prefix=prefix)
    return [obj["Key"] for obj in found.get("Contents", [])]


def _text_page(number: int) -> tuple[str | None, list[str]]:
    return (
        f"Section {number}",
        [f"Line {i} of page {number} in the river report." for i in range(6)],
    )


BLANK: tuple[str | None, list[str]] = (None, [])


def _drain(tmp_path: Path) -> None:
    """Waits until the workers took every message sent before this call: a one-page job
    sent now queues behind them, on the cpu and on the gpu queue."""
    marker = documents.make_scanned_pdf(tmp_path / "marker.pdf", [_text_page(1)])
    job_id = submit_file(marker).job_id
    assert wait_for_jobs([job_id], timeout=TIMEOUT) == {job_id: "succeeded"}


def _finished_one_recognizing_next(job_id: str) -> bool:
    pages = _pages(job_id).values()
    return any(p.state == PageState.SUCCEEDED for p in pages) and any(
        p.state == PageState.RECOGNIZING and p.recognize_attempts for p in pages
    )


def _assert_cancelled_cleanly(env: dict[str, str], job_id: str, cancelled_at: datetime) -> None:
    """After the cancel nothing ran for the job: no page finished, no region recognized,
    no result written, and its work objects are gone."""
    job = _job(job_id)
    assert job.state == JobState.CANCELLED
    assert job.result_markdown_key is None and job.result_json_key is None
    for page in _pages(job_id).values():
        assert page.state in (PageState.SUCCEEDED, PageState.CANCELLED), page.number
        assert page.finished_at is not None and page.finished_at <= cancelled_at
    late = [(r.page_number, r.index) for r in _regions(job_id) if r.updated_at > cancelled_at]
    assert late == [], "regions were written after the cancel"
    assert _keys(env, work_prefix("default", job_id)) == []
    assert _keys(env, result_key("default", job_id, "document")) == []


# -- cancel ----------------------------------------------------------------------------


def test_cancel_a_job_mid_flight_over_http(
    env: dict[str, str], api: httpx.Client, tmp_path: Path
) -> None:
    # Dense pages keep the recognizer busy for a while, so the cancel lands while one is
    # being recognized and the cpu works on the pages after it.
    dense = [
        (
            f"Section {n}",
            [f"Line {i} of page {n}, dense enough to take a while." for i in range(24)],
        )
        for n in range(1, 13)
    ]
    pdf = documents.make_scanned_pdf(tmp_path / "long.pdf", dense)
    with services.workers(env, {"cpu": 1, "gpu": 1}, log_dir=tmp_path):
        response = api.post(
            "/v1/jobs", files={"files": ("long.pdf", pdf.read_bytes(), "application/pdf")}
        )
        assert response.status_code == 201, response.text
        job_id = response.json()["jobs"][0]["id"]
        _wait_until(lambda: _finished_one_recognizing_next(job_id), "no page finished")

        response = api.delete(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["state"] == "cancelled"
        cancelled_at = _job(job_id).finished_at
        assert cancelled_at is not None
        counted = {
            n: (p.state, p.attempts, p.recognize_attempts) for n, p in _pages(job_id).items()
        }
        done_before = {n for n, (state, _, _) in counted.items() if state == "succeeded"}
        assert 1 <= len(done_before) < 12
        assert {p["state"] for p in body["pages"]} == {"succeeded", "cancelled"}
        # Cancelling again is a no-op that says the job is cancelled.
        again = api.delete(f"/v1/jobs/{job_id}")
        assert again.status_code == 200 and again.json()["state"] == "cancelled"

        _drain(tmp_path)

    _assert_cancelled_cleanly(env, job_id, cancelled_at)
    # Every message delivered after the cancel (most pages were still queued for the cpu
    # or the gpu) found the page ended and counted nothing.
    after = {n: (p.state, p.attempts, p.recognize_attempts) for n, p in _pages(job_id).items()}
    assert after == counted
    assert api.get(f"/v1/jobs/{job_id}").json()["state"] == "cancelled"
    assert api.get(f"/v1/jobs/{job_id}/result").status_code == 409


def test_cancel_a_batch_and_a_job_from_the_cli_then_retry_one(
    env: dict[str, str], api: httpx.Client, tmp_path: Path
) -> None:
    pdf = documents.make_scanned_pdf(tmp_path / "four.pdf", [_text_page(n) for n in range(1, 5)])
    single = documents.make_scanned_pdf(tmp_path / "single.pdf", [_text_page(1), _text_page(2)])
    with services.workers(env, {"cpu": 1, "gpu": 1}, log_dir=tmp_path):
        files = [("files", (f"doc{i}.pdf", pdf.read_bytes(), "application/pdf")) for i in range(3)]
        response = api.post("/v1/jobs", files=files, data={"batch_name": "to-cancel"})
        assert response.status_code == 201, response.text
        batch_id = response.json()["batch_id"]
        batch_jobs = [job["id"] for job in response.json()["jobs"]]
        single_id = submit_file(single).job_id

        result = pagemill(env, "cancel", single_id)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == f"job {single_id} cancelled"

        response = api.delete(f"/v1/batches/{batch_id}")
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "cancelled"
        assert response.json()["jobs_by_state"] == {"cancelled": 3}
        cancelled_at = max(_job(job_id).finished_at for job_id in batch_jobs)  # type: ignore[type-var]

        # Again, from the CLI: idempotent, and it says so.
        result = pagemill(env, "cancel", batch_id)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 jobs cancelled, 3 were already cancelled" in result.stdout
        result = pagemill(env, "cancel", single_id)
        assert result.returncode == 0 and "was already cancelled" in result.stdout
        result = pagemill(env, "status", single_id)
        assert "state     cancelled" in result.stdout, result.stdout + result.stderr
        result = pagemill(env, "status", batch_id)
        assert "cancelled" in result.stderr + result.stdout

        _drain(tmp_path)
        for job_id in batch_jobs:
            _assert_cancelled_cleanly(env, job_id, cancelled_at)

        # A cancelled job can be retried: its cancelled pages count as not done.
        retried = batch_jobs[0]
        response = api.post(f"/v1/jobs/{retried}/retry")
        assert response.status_code == 202, response.text
        # Running again, or queued for prepare when it was cancelled before it opened.
        assert response.json()["state"] in ("queued", "running")
        assert wait_for_jobs([retried], timeout=TIMEOUT) == {retried: "succeeded"}
        markdown = api.get(f"/v1/jobs/{retried}/result").text
        assert all(f"Section {n}" in markdown for n in range(1, 5)), markdown

    # A job that ended otherwise is not cancelled: 409 and exit 1, unchanged.
    response = api.delete(f"/v1/jobs/{retried}")
    assert response.status_code == 409 and "succeeded" in response.json()["detail"]
    result = pagemill(env, "cancel", retried)
    assert result.returncode == 1 and "already ended" in result.stderr
    assert _job(retried).state == JobState.SUCCEEDED
    assert api.delete("/v1/jobs/" + "0" * 32).status_code == 404
    assert api.delete("/v1/batches/" + "0" * 32).status_code == 404
    assert pagemill(env, "cancel", "0" * 32).returncode == 2


def test_a_page_rendering_when_its_job_is_cancelled_leaves_no_work_objects(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The cancel call deletes the job's work objects; a page task that was rendering then
    writes its crops after that, sees the cancel, and deletes them itself. The pipeline runs
    in this process, so the cancel lands between the page's claim and its layout record."""
    from app.settings import get_settings
    from workers import pipeline

    pdf = documents.make_scanned_pdf(tmp_path / "one.pdf", [_text_page(1)])
    job_id = submit_file(pdf).job_id
    settings = get_settings()
    assert pipeline.prepare_document(job_id, settings) == [("pagemill.page", (job_id, 1))]
    with ThreadPoolExecutor(1) as pool:
        rendering = pool.submit(pipeline.process_page, job_id, 1, settings)
        _wait_until(lambda: _pages(job_id)[1].attempts == 1, "the page was not claimed")
        outcome = control.cancel_job(job_id)
        assert outcome is not None and outcome.changed
        assert rendering.result() == []
    assert _pages(job_id)[1].state == PageState.CANCELLED
    assert _regions(job_id) == []
    assert _keys(env, work_prefix("default", job_id)) == []
    # A message delivered later finds nothing to do, and leaves nothing either.
    assert pipeline.recognize_page(job_id, 1, settings) == []


# -- retry -----------------------------------------------------------------------------


def test_retry_reprocesses_only_what_failed(
    env: dict[str, str], api: httpx.Client, tmp_path: Path
) -> None:
    """First run: a gpu worker that gives up on every recognition (so every page with text
    fails, blank pages succeed) and a cpu worker that refuses documents over 4 pages. Then
    both limits are lifted and the failed work is retried."""
    mixed = documents.make_scanned_pdf(
        tmp_path / "mixed.pdf", [_text_page(1), BLANK, _text_page(3), BLANK]
    )
    five = documents.make_scanned_pdf(tmp_path / "five.pdf", [_text_page(1), *[BLANK] * 4])
    files = [
        ("files", ("mixed.pdf", mixed.read_bytes(), "application/pdf")),
        ("files", ("five.pdf", five.read_bytes(), "application/pdf")),
    ]
    strict_cpu = {**env, "PAGEMILL_MAX_PAGES_PER_DOCUMENT": "4"}
    failing_gpu = {**env, "PAGEMILL_TASK_MAX_ATTEMPTS": "0"}
    with (
        services.workers(strict_cpu, {"cpu": 1}, log_dir=tmp_path / "cpu1"),
        services.workers(failing_gpu, {"gpu": 1}, log_dir=tmp_path / "gpu1"),
    ):
        response = api.post("/v1/jobs", files=files, data={"batch_name": "retry"})
        assert response.status_code == 201, response.text
        batch_id = response.json()["batch_id"]
        mixed_id, five_id = (job["id"] for job in response.json()["jobs"])
        assert wait_for_jobs([mixed_id, five_id], timeout=TIMEOUT) == {
            mixed_id: "partial",
            five_id: "failed",
        }
    first = _pages(mixed_id)
    assert [first[n].state for n in (1, 2, 3, 4)] == ["failed", "succeeded"] * 2
    assert _job(mixed_id).pages_failed == 2
    assert "too many pages" in (_job(five_id).error or "")
    assert _pages(five_id) == {}

    with services.workers(env, {"cpu": 1, "gpu": 1}, log_dir=tmp_path / "run2"):
        result = pagemill(env, "retry", mixed_id, "--failed")
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == f"job {mixed_id}: 2 pages queued again"
        job = _job(mixed_id)
        assert job.state == JobState.RUNNING and (job.pages_done, job.pages_failed) == (2, 0)
        assert job.result_markdown_key is None

        # The batch retry takes the job that failed as a whole (the other one is running).
        response = api.post(f"/v1/batches/{batch_id}/retry")
        assert response.status_code == 202, response.text
        states = {job["id"]: job["state"] for job in response.json()["jobs"]}
        assert states[five_id] == "queued"
        assert _job(five_id).attempts in (0, 1)  # reset; the new prepare may have begun

        assert wait_for_jobs([mixed_id, five_id], timeout=TIMEOUT) == {
            mixed_id: "succeeded",
            five_id: "succeeded",
        }

    again = _pages(mixed_id)
    for number in (2, 4):  # the blank pages that had succeeded were not touched
        assert again[number].attempts == first[number].attempts == 1
        assert again[number].finished_at == first[number].finished_at
    for number in (1, 3):
        assert again[number].state == "succeeded" and again[number].error is None
        assert (again[number].attempts, again[number].recognize_attempts) == (1, 1)
        assert again[number].finished_at > first[number].finished_at  # type: ignore[operator]
    markdown = api.get(f"/v1/jobs/{mixed_id}/result").text
    assert "Section 1" in markdown and "Section 3" in markdown, markdown
    assert len(_pages(five_id)) == 5 and _job(five_id).attempts == 1
    assert _keys(env, work_prefix("default", mixed_id)) == []

    # Nothing failed any more: both ways say so and change nothing.
    response = api.post(f"/v1/jobs/{mixed_id}/retry")
    assert response.status_code == 409 and "succeeded" in response.json()["detail"]
    assert api.post(f"/v1/batches/{batch_id}/retry").status_code == 409
    result = pagemill(env, "retry", batch_id)
    assert result.returncode == 1 and "nothing to retry" in result.stderr
    # Nor is there anything left to cancel in the batch.
    response = api.delete(f"/v1/batches/{batch_id}")
    assert response.status_code == 409 and "every job has ended" in response.json()["detail"]
    result = pagemill(env, "retry", mixed_id, "--failed")
    assert result.returncode == 1 and "nothing to retry" in result.stderr
    assert api.post("/v1/jobs/" + "0" * 32 + "/retry").status_code == 404
    assert _job(mixed_id).state == JobState.SUCCEEDED
