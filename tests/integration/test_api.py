"""The HTTP API as a real `pagemill api` process, on the real Postgres, Redis, SeaweedFS and
worker processes of the test session."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import documents, services
from tests.support.text import character_error_rate

pytestmark = pytest.mark.integration

PAGEMILL = str(Path(sys.executable).parent / "pagemill")
KNOWN_WORDS = ("quarterly", "river", "rainfall", "spillway", "bridge")


@pytest.fixture(scope="module")
def api_key(stack_env: dict[str, str]) -> str:
    """A key of the tenant these tests act for (tests/integration/test_tenants.py tests the
    keys themselves)."""
    return services.api_key(stack_env, "api-tests", "test_api")


@pytest.fixture(scope="module")
def api(
    stack_env: dict[str, str],
    stack_workers: dict[str, object],
    api_key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[httpx.Client]:
    """A real API server process against the session's stack, called with an API key."""
    log_path = tmp_path_factory.mktemp("api") / "api.log"
    with (
        services.api_server(stack_env, log_path) as url,
        httpx.Client(base_url=url, timeout=30, headers=services.bearer(api_key)) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def mixed_batch(api: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One request with a good scanned PDF, a corrupt PDF and a text file, waited for."""
    folder = tmp_path_factory.mktemp("uploads")
    good = documents.make_scanned_pdf(
        folder / "report.pdf", [(documents.SAMPLE_TITLE, documents.SAMPLE_PARAGRAPHS)]
    )
    digital = documents.make_born_digital_pdf(folder / "digital.pdf", [(None, ["Some text."])])
    corrupt = documents.make_corrupt_pdf(folder / "corrupt.pdf", digital)
    files = [
        ("files", ("report.pdf", good.read_bytes(), "application/pdf")),
        ("files", ("corrupt.pdf", corrupt.read_bytes(), "application/pdf")),
        ("files", ("notes.txt", b"just some notes, not a document\n", "text/plain")),
    ]
    response = api.post("/v1/jobs", files=files, data={"batch_name": "api-mixed"})
    assert response.status_code == 201, response.text
    submitted = response.json()
    batch = _wait_for_batch(api, submitted["batch_id"])
    return {"submitted": submitted, "batch": batch}


def _wait_for_batch(api: httpx.Client, batch_id: str, timeout: float = 240.0) -> dict[str, Any]:
    """Polls the batch until it is no longer running (a guard against hangs, not a check)."""
    deadline = time.monotonic() + timeout
    while True:
        response = api.get(f"/v1/batches/{batch_id}")
        assert response.status_code == 200, response.text
        batch: dict[str, Any] = response.json()
        if batch["state"] != "running":
            return batch
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} still running after {timeout} s: {batch}")
        time.sleep(0.3)


def _job_ids(mixed_batch: dict[str, Any]) -> dict[str, str]:
    return {job["filename"]: job["id"] for job in mixed_batch["submitted"]["jobs"]}


# -- service endpoints -----------------------------------------------------------------


def test_healthz_reports_every_dependency_ok(api: httpx.Client) -> None:
    response = api.get("/healthz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok", "storage": "ok"}


def test_openapi_lists_the_routes(api: httpx.Client) -> None:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/result",
        "/v1/batches/{batch_id}",
        "/healthz",
    ):
        assert path in paths, sorted(paths)
    assert "post" in paths["/v1/jobs"]


# -- submitting ------------------------------------------------------------------------


def test_one_file_makes_one_job_and_no_batch(api: httpx.Client, tmp_path: Path) -> None:
    image = documents.make_image(tmp_path / "hello.png", "PNG", None, ["Hello from the API."])
    response = api.post("/v1/jobs", files={"files": ("hello.png", image.read_bytes(), "image/png")})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["batch_id"] is None
    (job,) = body["jobs"]
    assert len(job["id"]) == 32 and job["batch_id"] is None
    assert job["filename"] == "hello.png" and job["media_type"] == "image/png"
    assert job["size_bytes"] == image.stat().st_size
    assert job["state"] in ("queued", "running", "assembling", "succeeded")

    state = job["state"]
    deadline = time.monotonic() + 240
    while state in ("queued", "running", "assembling") and time.monotonic() < deadline:
        time.sleep(0.3)
        state = api.get(f"/v1/jobs/{job['id']}").json()["state"]
    assert state == "succeeded"
    markdown = api.get(f"/v1/jobs/{job['id']}/result", params={"format": "md"}).text
    assert "hello" in markdown.lower()


def test_several_files_make_one_batch(mixed_batch: dict[str, Any]) -> None:
    submitted = mixed_batch["submitted"]
    assert submitted["batch_id"]
    assert [job["filename"] for job in submitted["jobs"]] == [
        "report.pdf",
        "corrupt.pdf",
        "notes.txt",
    ]
    assert len({job["id"] for job in submitted["jobs"]}) == 3
    assert {job["batch_id"] for job in submitted["jobs"]} == {submitted["batch_id"]}


def test_batch_ends_partial_with_counts_by_state(mixed_batch: dict[str, Any]) -> None:
    batch = mixed_batch["batch"]
    assert batch["id"] == mixed_batch["submitted"]["batch_id"]
    assert batch["name"] == "api-mixed"
    assert batch["state"] == "partial"
    assert batch["jobs_total"] == 3
    assert batch["jobs_by_state"] == {"succeeded": 1, "failed": 2}
    assert batch["progress"]["percent"] == 100.0
    assert batch["progress"]["pages_done"] == 1
    assert {job["filename"]: job["state"] for job in batch["jobs"]} == {
        "report.pdf": "succeeded",
        "corrupt.pdf": "failed",
        "notes.txt": "failed",
    }


def test_good_job_status(api: httpx.Client, mixed_batch: dict[str, Any]) -> None:
    job_id = _job_ids(mixed_batch)["report.pdf"]
    response = api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200
    job = response.json()
    assert job["id"] == job_id and job["state"] == "succeeded" and job["error"] is None
    assert job["media_type"] == "application/pdf"
    progress = job["progress"]
    assert progress["pages_done"] == progress["pages_total"] == 1
    assert progress["pages_failed"] == 0 and progress["percent"] == 100.0

    timings = job["timings"]
    for key in ("created_at", "started_at", "finished_at"):
        assert timings[key], key
    assert timings["queued_seconds"] >= 0 and timings["running_seconds"] > 0

    (page,) = job["pages"]
    assert page["number"] == 1 and page["state"] == "succeeded" and page["error"] is None
    assert page["regions"] >= 1 and page["attempts"] >= 1
    assert page["render_ms"] > 0 and page["layout_ms"] > 0

    links = job["result"]
    assert links["markdown"].endswith(f"/v1/jobs/{job_id}/result?format=md")
    assert links["json"].endswith(f"/v1/jobs/{job_id}/result?format=json")
    assert links["markdown"].startswith(str(api.base_url).rstrip("/"))
    # The links work as given.
    linked = api.get(links["markdown"])
    assert linked.status_code == 200 and "spillway" in linked.text.lower()

    without_pages = api.get(f"/v1/jobs/{job_id}", params={"pages": "false"}).json()
    assert without_pages["pages"] is None


def test_markdown_result(api: httpx.Client, mixed_batch: dict[str, Any]) -> None:
    job_id = _job_ids(mixed_batch)["report.pdf"]
    response = api.get(f"/v1/jobs/{job_id}/result", params={"format": "md"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/markdown")
    text = response.text.lower()
    for word in KNOWN_WORDS:
        assert word in text, (word, response.text)
    assert character_error_rate(documents.sample_text(), response.text) < 0.10, response.text
    assert "<!-- page 1 -->" in response.text
    # md is the default format.
    assert api.get(f"/v1/jobs/{job_id}/result").text == response.text


def test_json_result(api: httpx.Client, mixed_batch: dict[str, Any]) -> None:
    job_id = _job_ids(mixed_batch)["report.pdf"]
    response = api.get(f"/v1/jobs/{job_id}/result", params={"format": "json"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["job_id"] == job_id and document["filename"] == "report.pdf"
    (page,) = document["pages"]
    assert page["page"] == 1 and page["regions"]
    for region in page["regions"]:
        x0, y0, x1, y1 = region["bbox_norm"]
        assert 0 <= x0 <= x1 <= 1000 and 0 <= y0 <= y1 <= 1000, region
    contents = " ".join(r["content"] or "" for r in page["regions"]).lower()
    assert "spillway" in contents


def test_bad_jobs_fail_with_a_readable_error(
    api: httpx.Client, mixed_batch: dict[str, Any]
) -> None:
    ids = _job_ids(mixed_batch)
    for name, expected in (("corrupt.pdf", "corrupt"), ("notes.txt", "plain text")):
        job = api.get(f"/v1/jobs/{ids[name]}").json()
        assert job["state"] == "failed", name
        assert job["error"] and expected in job["error"], (name, job["error"])
        assert job["result"] is None
        assert job["progress"]["percent"] == 100.0
    # The batch view carries the same errors.
    errors = {job["filename"]: job["error"] for job in mixed_batch["batch"]["jobs"]}
    assert "plain text" in errors["notes.txt"] and errors["report.pdf"] is None


# -- errors ----------------------------------------------------------------------------


def test_unknown_job_and_batch_are_404(api: httpx.Client) -> None:
    missing = "0" * 32
    for path in (f"/v1/jobs/{missing}", f"/v1/jobs/{missing}/result", f"/v1/batches/{missing}"):
        response = api.get(path)
        assert response.status_code == 404, path
        assert missing in response.json()["detail"]


def test_result_of_a_failed_job_is_409_with_the_reason(
    api: httpx.Client, mixed_batch: dict[str, Any]
) -> None:
    job_id = _job_ids(mixed_batch)["notes.txt"]
    for fmt in ("md", "json"):
        response = api.get(f"/v1/jobs/{job_id}/result", params={"format": fmt})
        assert response.status_code == 409
        detail = response.json()["detail"]
        assert "failed" in detail and "plain text" in detail


@pytest.mark.parametrize(
    "data",
    [
        {"extract": "not json"},
        {"extract": "[1, 2]"},  # JSON, but not an object
        {"extract": "{}"},  # an object without keys
        {"mode": "sometimes"},
        {"dpi": "5"},
    ],
)
def test_invalid_options_are_422(api: httpx.Client, data: dict[str, str]) -> None:
    response = api.post(
        "/v1/jobs", files={"files": ("a.png", b"\x89PNG\r\n\x1a\n", "image/png")}, data=data
    )
    assert response.status_code == 422, response.text


def test_bad_result_format_is_422(api: httpx.Client, mixed_batch: dict[str, Any]) -> None:
    job_id = _job_ids(mixed_batch)["report.pdf"]
    assert api.get(f"/v1/jobs/{job_id}/result", params={"format": "docx"}).status_code == 422


def test_post_without_files_is_422(api: httpx.Client) -> None:
    assert api.post("/v1/jobs", data={"batch_name": "x"}).status_code == 422


# -- refusing an un-migrated database --------------------------------------------------


@pytest.fixture(scope="module")
def empty_database() -> Iterator[str]:
    with services.postgres_database() as url:
        yield url


def _run_until_exit(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs a server that must refuse to start; a server that starts would hang here until
    the timeout, which fails the test."""
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_api_refuses_an_unmigrated_database(
    stack_env: dict[str, str], empty_database: str, tmp_path: Path
) -> None:
    env = services.process_env({**stack_env, "PAGEMILL_DATABASE_URL": empty_database})
    port = services.free_port()
    result = _run_until_exit([PAGEMILL, "api", "--port", str(port)], env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "pagemill migrate" in output, output


def test_app_lifespan_refuses_an_unmigrated_database(
    stack_env: dict[str, str], empty_database: str
) -> None:
    """Served by any ASGI server (not only `pagemill api`), the app refuses to start."""
    env = services.process_env({**stack_env, "PAGEMILL_DATABASE_URL": empty_database})
    port = services.free_port()
    argv = [sys.executable, "-m", "uvicorn", "app.api.main:app", "--port", str(port)]
    result = _run_until_exit(argv, env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "pagemill migrate" in output, output


# -- broker and storage down -----------------------------------------------------------


@pytest.fixture(scope="module")
def degraded_api(
    stack_env: dict[str, str], api: httpx.Client, api_key: str
) -> Iterator[httpx.Client]:
    """A second API on the same (migrated) database, with its broker and storage pointed at
    ports where nothing listens."""
    dead_redis, dead_s3, port = services.free_port(), services.free_port(), services.free_port()
    env = services.process_env(
        {
            **stack_env,
            "PAGEMILL_BROKER_URL": f"redis://127.0.0.1:{dead_redis}/0",
            "PAGEMILL_S3_ENDPOINT": f"http://127.0.0.1:{dead_s3}",
        }
    )
    process = subprocess.Popen(
        [PAGEMILL, "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        services.wait_for_port(port, 30, process)  # type: ignore[arg-type]
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            timeout=120,
            headers={"Authorization": f"Bearer {api_key}"},
        ) as client:
            yield client
    finally:
        process.terminate()
        process.wait(20)


def test_healthz_is_503_when_broker_and_storage_are_down(degraded_api: httpx.Client) -> None:
    response = degraded_api.get("/healthz")
    assert response.status_code == 503, response.text
    health = response.json()
    assert health["status"] == "degraded" and health["database"] == "ok"
    assert health["broker"].startswith("error") and health["storage"].startswith("error")


def test_status_is_served_while_storage_is_down(
    degraded_api: httpx.Client, mixed_batch: dict[str, Any]
) -> None:
    job_id = _job_ids(mixed_batch)["report.pdf"]
    response = degraded_api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200 and response.json()["state"] == "succeeded"


def test_result_is_503_while_storage_is_down(
    degraded_api: httpx.Client, mixed_batch: dict[str, Any]
) -> None:
    """The app maps StorageError to 503 "storage unavailable"; an unreachable S3 must reach
    the client as that, not as a 500."""
    job_id = _job_ids(mixed_batch)["report.pdf"]
    response = degraded_api.get(f"/v1/jobs/{job_id}/result")
    assert response.status_code == 503, response.text
    assert "storage unavailable" in response.json()["detail"]
