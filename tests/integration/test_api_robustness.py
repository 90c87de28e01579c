"""The API never answers 500, never half-creates, never shows its internals: a real
`pagemill api` process on a private Redis, Postgres and SeaweedFS that the tests stop and
start, and schemathesis against the live OpenAPI schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import psycopg
import pytest

from tests.support import documents, services
from tests.support.private import PrivatePostgres, PrivateRedis, postgres_cluster, redis_server

pytestmark = pytest.mark.integration

PAGEMILL = str(Path(sys.executable).parent / "pagemill")
DB_PASSWORD = "pm-robust-db-secret"
BUCKET = "robust-bucket"
# Every text region kept as a figure crop: real figures from the real pipeline, on a
# cpu worker alone (no region waits for the recognizer).
FIGURES_ONLY = json.dumps({"text": "skip", "paragraph_title": "skip", "doc_title": "skip"})
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Stack:
    env: dict[str, str]
    redis: PrivateRedis
    postgres: PrivatePostgres
    s3: services.SeaweedFS

    def internals(self) -> list[str]:
        """What a response must never show: where the services are and how to get in."""
        return [
            str(self.redis.port),
            str(self.postgres.port),
            self.s3.endpoint.rsplit(":", 1)[1],
            "127.0.0.1",
            BUCKET,
            DB_PASSWORD,
            services.S3_SECRET,
            "originals/",
            "results/",
        ]

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        url = self.postgres.url().replace("+psycopg", "")
        with psycopg.connect(url, connect_timeout=10) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("robust")
    saved = {k: v for k, v in os.environ.items() if k.startswith("PAGEMILL_")}
    with (
        redis_server(folder / "redis") as redis,
        postgres_cluster(DB_PASSWORD) as postgres,
        services.seaweedfs(folder / "s3") as s3,
    ):
        env = {
            "PAGEMILL_DATABASE_URL": postgres.url(),
            "PAGEMILL_BROKER_URL": redis.url,
            "PAGEMILL_S3_ENDPOINT": s3.endpoint,
            "PAGEMILL_S3_ACCESS_KEY": services.S3_KEY,
            "PAGEMILL_S3_SECRET_KEY": services.S3_SECRET,
            "PAGEMILL_S3_BUCKET": BUCKET,
            "PAGEMILL_DATA_DIR": str(folder / "data"),
            "PAGEMILL_RETRY_BACKOFF_SECONDS": "0.5",
            "PAGEMILL_LABEL_ROUTES": FIGURES_ONLY,
            "PAGEMILL_API_AUTH": "off",
        }
        services.configure(env)
        from app.db import migrate

        migrate()
        try:
            with services.workers(env, {"cpu": 1}, log_dir=folder / "logs"):
                yield Stack(env, redis, postgres, s3)
        finally:
            services.configure(saved)


@dataclass
class Api:
    client: httpx.Client
    log: Path


@pytest.fixture(scope="module")
def api(private_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    log_path = tmp_path_factory.mktemp("robust-api") / "api.log"
    with (
        services.api_server(private_stack.env, log_path) as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        yield Api(client, log_path)


def _upload(name: str = "page.png", data: bytes = PNG) -> tuple[str, tuple[str, bytes, str]]:
    return ("files", (name, data, "image/png"))


def _wait_for_job(api: Api, job_id: str, timeout: float = 300.0) -> dict[str, Any]:
    """Polls until the job ends (a guard against hangs, not a check)."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = api.client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "partial", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s")
        time.sleep(0.3)


def _assert_unavailable(response: httpx.Response, service: str, stack: Stack) -> None:
    assert response.status_code == 503, response.text[:500]
    assert int(response.headers["Retry-After"]) > 0
    assert response.json() == {"detail": f"{service} unavailable, retry later"}
    for secret in stack.internals():
        assert secret not in response.text, (secret, response.text[:500])


def _jobs_named(stack: Stack, *names: str) -> list[tuple[Any, ...]]:
    return stack.rows("SELECT id, state FROM jobs WHERE filename = ANY(%s)", list(names))


def _batches_named(stack: Stack, name: str) -> list[tuple[Any, ...]]:
    return stack.rows("SELECT id FROM batches WHERE name = %s", name)


# -- bad input: 404 / 422, and nothing created ------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/%00",
        "/v1/batches/%00",
        "/v1/jobs/%00/result",
        "/v1/jobs/abc%00def",
        "/v1/jobs/" + "g" * 32,
        "/v1/batches/" + "0" * 33,
        "/v1/jobs/%00/images/page-00001-region-0000.png",
        "/v1/jobs/" + "0" * 32 + "%0A",
    ],
)
def test_malformed_ids_are_refused_not_500(api: Api, path: str) -> None:
    response = api.client.get(path)
    assert response.status_code in (404, 422), response.text[:500]


@pytest.mark.parametrize(
    "batch_name",
    ["x" * 256, "night\x00shift", "tab\there", "bell\x07"],
    ids=["too-long", "nul", "tab", "control"],
)
def test_bad_batch_names_are_422_and_create_nothing(
    api: Api, private_stack: Stack, batch_name: str
) -> None:
    marker = f"bad-batch-{len(batch_name)}-{ord(batch_name[-1])}.png"
    response = api.client.post(
        "/v1/jobs", files=[_upload(marker), _upload("second.png")], data={"batch_name": batch_name}
    )
    assert response.status_code == 422, response.text[:500]
    assert _jobs_named(private_stack, marker) == []


def test_a_long_file_name_is_422_before_any_job_of_the_batch(
    api: Api, private_stack: Stack
) -> None:
    """The long name is the second file: the first must not have become a job."""
    files = [_upload("first-of-long.png"), _upload("l" * 1100 + ".png")]
    response = api.client.post("/v1/jobs", files=files, data={"batch_name": "long-name-batch"})
    assert response.status_code == 422, response.text[:500]
    assert "1024" in response.text
    assert _jobs_named(private_stack, "first-of-long.png") == []
    assert _batches_named(private_stack, "long-name-batch") == []


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b"])
def test_control_characters_in_a_file_name_are_422(
    api: Api, private_stack: Stack, char: str
) -> None:
    # Raw multipart: httpx would percent-encode the name.
    name = f"ctl{char}name.png".encode()
    body = (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="files"; filename="' + name + b'"\r\n'
        b"Content-Type: image/png\r\n\r\n" + PNG + b"\r\n--b0undary--\r\n"
    )
    headers = {"Content-Type": "multipart/form-data; boundary=b0undary"}
    response = api.client.post("/v1/jobs", content=body, headers=headers)
    assert response.status_code == 422, response.text[:500]
    assert "control characters" in response.text
    assert private_stack.rows("SELECT id FROM jobs WHERE filename LIKE 'ctl%%name.png'") == []


@pytest.mark.parametrize(
    "data",
    [{"extract": "[" * 60_000}, {"extract": json.dumps({"k" * 70_000: ""})}],
    ids=["deeply-nested", "too-large"],
)
def test_hostile_templates_are_422(api: Api, data: dict[str, str]) -> None:
    response = api.client.post("/v1/jobs", files=[_upload("template.png")], data=data)
    assert response.status_code == 422, response.text[:500]


# -- figures: served by the API, written by `pagemill result` --------------------------


@pytest.fixture(scope="module")
def figure_job(api: Api, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("figures")
    pdf = documents.make_scanned_pdf(
        folder / "figures.pdf", [(documents.SAMPLE_TITLE, documents.SAMPLE_PARAGRAPHS)]
    )
    response = api.client.post(
        "/v1/jobs", files=[("files", ("figures.pdf", pdf.read_bytes(), "application/pdf"))]
    )
    assert response.status_code == 201, response.text[:500]
    (job,) = response.json()["jobs"]
    finished = _wait_for_job(api, job["id"])
    assert finished["state"] == "succeeded", finished
    return finished


def test_every_figure_link_of_the_markdown_is_served(api: Api, figure_job: dict[str, Any]) -> None:
    result_url = figure_job["result"]["markdown"]
    markdown = api.client.get(result_url).text
    links = [part.split(")", 1)[0] for part in markdown.split("](")[1:]]
    assert links and all(link.startswith("images/page-") for link in links), markdown
    for link in links:
        # Relative to the result's own URL, as a markdown viewer resolves it.
        response = api.client.get(urljoin(result_url, link))
        assert response.status_code == 200, (link, response.text[:500])
        assert response.headers["content-type"] == "image/png"
        assert response.content.startswith(PNG)


@pytest.mark.parametrize(
    "name",
    [
        "..%2Fdocument.md",
        "%2E%2E%2F%2E%2E%2Foriginals",
        "document.md",
        "page-1-region-1.png",
        "page-00001-region-0000.png%00.md",
        "page-00001-region-0000.PNG",
        "page-00001-region-0000.png%0A",
    ],
)
def test_image_names_other_than_figure_links_are_refused(
    api: Api, figure_job: dict[str, Any], name: str
) -> None:
    response = api.client.get(f"/v1/jobs/{figure_job['id']}/images/{name}")
    assert response.status_code in (404, 422), response.text[:500]
    assert not response.content.startswith(PNG)


def test_a_figure_that_does_not_exist_is_404(api: Api, figure_job: dict[str, Any]) -> None:
    response = api.client.get(f"/v1/jobs/{figure_job['id']}/images/page-09999-region-9999.png")
    assert response.status_code == 404, response.text[:500]
    assert "results/" not in response.text


def test_pagemill_result_writes_the_figures_beside_the_file(
    private_stack: Stack, figure_job: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "out" / "report.md"
    target.parent.mkdir()
    result = subprocess.run(
        [PAGEMILL, "result", figure_job["id"], "-o", str(target)],
        env=services.process_env(private_stack.env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    markdown = target.read_text()
    links = [part.split(")", 1)[0] for part in markdown.split("](")[1:]]
    assert links and all(link.startswith("report.images/page-") for link in links), markdown
    for link in links:
        assert (target.parent / link).read_bytes().startswith(PNG), link


# -- outages: 503 with Retry-After, nothing half-made, nothing internal shown ----------


def test_broker_refusing_the_message_leaves_no_job(api: Api, private_stack: Stack) -> None:
    """The broker accepts the connection but not the message (out of memory): the rows are
    already committed when the send fails, and must be removed again."""
    redis = private_stack.redis
    redis.command("config", "set", "maxmemory", "1")
    try:
        files = [_upload("oom-first.png"), _upload("oom-second.png")]
        response = api.client.post("/v1/jobs", files=files, data={"batch_name": "oom-batch"})
        _assert_unavailable(response, "broker", private_stack)
        assert _jobs_named(private_stack, "oom-first.png", "oom-second.png") == []
        assert _batches_named(private_stack, "oom-batch") == []
    finally:
        redis.command("config", "set", "maxmemory", "0")
    assert api.client.post("/v1/jobs", files=[_upload("oom-after.png")]).status_code == 201


def test_broker_down_is_503_and_leaves_no_job(api: Api, private_stack: Stack) -> None:
    assert api.client.post("/v1/jobs", files=[_upload("before-broker.png")]).status_code == 201
    private_stack.redis.stop()
    try:
        files = [_upload("broker-down-1.png"), _upload("broker-down-2.png")]
        response = api.client.post("/v1/jobs", files=files, data={"batch_name": "down-batch"})
        _assert_unavailable(response, "broker", private_stack)
        assert _jobs_named(private_stack, "broker-down-1.png", "broker-down-2.png") == []
        assert _batches_named(private_stack, "down-batch") == []
        response = api.client.post("/v1/jobs", files=[_upload("broker-down-3.png")])
        _assert_unavailable(response, "broker", private_stack)
        assert _jobs_named(private_stack, "broker-down-3.png") == []
    finally:
        private_stack.redis.start()
    assert api.client.post("/v1/jobs", files=[_upload("after-broker.png")]).status_code == 201


def test_storage_down_is_503_without_endpoint_bucket_or_key(
    api: Api, private_stack: Stack, figure_job: dict[str, Any]
) -> None:
    job_id = figure_job["id"]
    private_stack.s3.stop()
    try:
        response = api.client.post("/v1/jobs", files=[_upload("storage-down.png", b"unseen")])
        _assert_unavailable(response, "storage", private_stack)
        assert _jobs_named(private_stack, "storage-down.png") == []
        for path in (
            f"/v1/jobs/{job_id}/result",
            f"/v1/jobs/{job_id}/result?format=json",
            f"/v1/jobs/{job_id}/images/page-00001-region-0000.png",
        ):
            _assert_unavailable(api.client.get(path), "storage", private_stack)
        # Status lives in the database: still served.
        assert api.client.get(f"/v1/jobs/{job_id}").status_code == 200
    finally:
        private_stack.s3.start()
    # The detail went to the server log.
    assert "storage unavailable" in api.log.read_text()
    assert api.client.get(f"/v1/jobs/{job_id}/result").status_code == 200


def test_database_down_is_503_without_host_port_or_password(
    api: Api, private_stack: Stack, figure_job: dict[str, Any]
) -> None:
    job_id, batch_id = figure_job["id"], "0" * 32
    private_stack.postgres.stop()
    try:
        for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/result", f"/v1/batches/{batch_id}"):
            _assert_unavailable(api.client.get(path), "database", private_stack)
        response = api.client.post("/v1/jobs", files=[_upload("database-down.png")])
        _assert_unavailable(response, "database", private_stack)
        health = api.client.get("/healthz")
        assert health.status_code == 503 and health.json()["database"].startswith("error")
        for secret in private_stack.internals():
            assert secret not in health.text, (secret, health.text)
    finally:
        private_stack.postgres.start()
    assert api.client.get(f"/v1/jobs/{job_id}").status_code == 200
    assert _jobs_named(private_stack, "database-down.png") == []


# -- the API's own configuration errors ------------------------------------------------


def test_api_names_a_refused_database_password_not_a_missing_schema(
    private_stack: Stack, tmp_path: Path
) -> None:
    env = {**private_stack.env, "PAGEMILL_DATABASE_URL": private_stack.postgres.url("wrong-pw")}
    result = subprocess.run(
        [PAGEMILL, "api", "--port", str(services.free_port())],
        env=services.process_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "password authentication failed" in output and "not migrated" not in output
    assert "wrong-pw" not in output and "Traceback" not in output


# -- schemathesis against the live OpenAPI schema --------------------------------------


@pytest.fixture(scope="module")
def fuzz_env(stack_env: dict[str, str]) -> dict[str, str]:
    """The session's stack with a broker of its own and no workers: the fuzzed jobs stay
    queued and cost nothing. API keys are on, as in production; a key for document
    passwords is set, as production needs one. An event stream of a queued job would never
    end: here it ends after two seconds (as it does after five minutes by default)."""
    from cryptography.fernet import Fernet

    return {
        **stack_env,
        **services.broker_env("fuzz"),
        "PAGEMILL_SECRET_KEY": Fernet.generate_key().decode(),
        "PAGEMILL_EVENTS_MAX_SECONDS": "2",
    }


@pytest.fixture(scope="module")
def fuzz_headers(fuzz_env: dict[str, str]) -> dict[str, str]:
    """Every fuzzed request carries an API key."""
    return services.bearer(services.api_key(fuzz_env, "fuzz", "schemathesis"))


@pytest.fixture(scope="module")
def fuzz_api(fuzz_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("fuzz-api") / "api.log"
    with services.api_server(fuzz_env, log_path) as url:
        yield url
    errors = [line for line in log_path.read_text().splitlines() if "Traceback" in line]
    assert not errors, log_path.read_text()


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    fuzz_api: str, fuzz_headers: dict[str, str], tmp_path: Path
) -> None:
    """Every operation of the live schema, bounded (a few dozen examples each): no 5xx, and
    every status code, content type and body as the schema declares it."""
    checks = ",".join(
        (
            "not_a_server_error",
            "status_code_conformance",
            "content_type_conformance",
            "response_schema_conformance",
            "response_headers_conformance",
        )
    )
    argv = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{fuzz_api}/openapi.json",
        f"--checks={checks}",
        "--max-examples=25",
        "--phases=examples,coverage,fuzzing,stateful",
        "--seed=1",
        "--generation-database=none",
        "--request-timeout=60",
        "--no-color",
        *[f"--header={name}: {value}" for name, value in fuzz_headers.items()],
    ]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=services.process_env({}),
    )
    print(result.stdout[-1500:])  # the summary, shown with -s or on failure
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
