"""Tenants and API keys, end to end: keys made with `pagemill keys`, a real `pagemill api`
process, the session's Postgres, Redis, worker processes, and SeaweedFS (which checks
presigned signatures and expiry, unlike moto)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from tests.conftest import wait_for_jobs
from tests.support import documents, services

pytestmark = pytest.mark.integration

PAGEMILL = str(Path(sys.executable).parent / "pagemill")
MISSING = "0" * 32


def _pagemill(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PAGEMILL, *args],
        env=services.process_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def base_url(
    stack_env: dict[str, str], stack_workers: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with services.api_server(stack_env, tmp_path_factory.mktemp("tenants-api") / "api.log") as url:
        yield url


@pytest.fixture(scope="module")
def keys(stack_env: dict[str, str]) -> dict[str, str]:
    return {
        tenant: services.cli_key(stack_env, tenant, f"{tenant} test key")
        for tenant in ("acme", "globex")
    }


def _client(base_url: str, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def acme(base_url: str, keys: dict[str, str]) -> Iterator[httpx.Client]:
    with _client(base_url, keys["acme"]) as client:
        yield client


@pytest.fixture(scope="module")
def globex(base_url: str, keys: dict[str, str]) -> Iterator[httpx.Client]:
    with _client(base_url, keys["globex"]) as client:
        yield client


@pytest.fixture(scope="module")
def upload(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("tenant-docs") / "memo.png"
    return documents.make_image(path, "PNG", None, ["A memo for one tenant."]).read_bytes()


@pytest.fixture(scope="module")
def acme_batch(acme: httpx.Client, upload: bytes, stack_env: dict[str, str]) -> dict[str, Any]:
    """Two jobs of tenant acme in one batch, through the API, waited for."""
    files = [("files", (f"memo-{i}.png", upload, "image/png")) for i in range(2)]
    response = acme.post("/v1/jobs", files=files, data={"batch_name": "acme-batch"})
    assert response.status_code == 201, response.text
    submitted: dict[str, Any] = response.json()
    services.configure(stack_env)
    states = wait_for_jobs([job["id"] for job in submitted["jobs"]])
    assert set(states.values()) == {"succeeded"}, states
    return submitted


def _routes_with_ids(client: httpx.Client) -> list[tuple[str, str]]:
    """Every (method, path) of the API that names a job or a batch, from its OpenAPI: routes
    added later are checked too."""
    paths = client.get("/openapi.json").json()["paths"]
    return [
        (method.upper(), path)
        for path, operations in paths.items()
        if "{job_id}" in path or "{batch_id}" in path
        for method in operations
    ]


def _fill(path: str, ident: str) -> str:
    path = path.replace("{job_id}", ident).replace("{batch_id}", ident)
    path = path.replace("{number}", "1")  # a page number
    return re.sub(r"\{[^}]+\}", "page-00001-region-0000.png", path)  # e.g. an image's name


# -- keys ------------------------------------------------------------------------------


def test_only_the_hash_of_a_key_is_stored_and_listed_without_it(
    stack_env: dict[str, str], keys: dict[str, str]
) -> None:
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import ApiKey

    services.configure(stack_env)
    key = keys["acme"]
    with session_scope() as session:
        row = session.scalars(
            select(ApiKey).where(ApiKey.key_hash == hashlib.sha256(key.encode()).hexdigest())
        ).one()
        stored = [str(getattr(row, column.key)) for column in ApiKey.__table__.columns]
    assert row.tenant == "acme" and row.name == "acme test key" and row.revoked_at is None
    assert key.startswith(row.prefix) and len(row.prefix) < len(key) // 2
    assert not any(key in value for value in stored)

    listed = _pagemill(stack_env, "keys", "list", "--tenant", "acme")
    assert listed.returncode == 0, listed.stderr
    assert row.id in listed.stdout and row.prefix in listed.stdout
    assert key not in listed.stdout and row.key_hash not in listed.stdout
    assert "globex" not in listed.stdout


def test_keys_need_a_safe_tenant_name(stack_env: dict[str, str]) -> None:
    for tenant in ("../etc", "Acme Corp", "a/b", ""):
        done = _pagemill(stack_env, "keys", "create", "--tenant", tenant)
        assert done.returncode == 2, (tenant, done.stdout, done.stderr)
        assert "pm_" not in done.stdout


def test_open_routes_need_no_key(base_url: str) -> None:
    with _client(base_url) as anonymous:
        for path in ("/healthz", "/docs", "/openapi.json"):
            assert anonymous.get(path).status_code == 200, path
        # /healthz says ok or error per dependency, nothing more.
        assert set(anonymous.get("/healthz").json().values()) <= {"ok", "degraded", "error"}


def test_every_v1_route_needs_a_valid_key(base_url: str, acme: httpx.Client) -> None:
    routes = [*_routes_with_ids(acme), ("POST", "/v1/jobs")]
    assert ("GET", "/v1/jobs/{job_id}/result") in routes
    for headers in (
        {},
        {"Authorization": "Bearer pm_" + "x" * 32},  # no such key
        {"Authorization": "Bearer"},
        {"Authorization": "Basic b3BzOnNlY3JldA=="},  # another scheme
    ):
        with _client(base_url) as client:
            for method, path in routes:
                response = client.request(method, _fill(path, MISSING), headers=headers)
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.headers["www-authenticate"] == "Bearer"


def test_an_upload_without_a_key_is_refused_before_its_body_is_read(base_url: str) -> None:
    """Were the body parsed first, this 2 MiB form field would be a 400 (too large a part)."""
    with _client(base_url) as client:
        response = client.post(
            "/v1/jobs",
            data={"batch_name": "x" * (2 << 20)},
            files={"files": ("a.png", b"\x89PNG\r\n\x1a\n", "image/png")},
        )
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_revoked_key_is_refused(
    stack_env: dict[str, str], base_url: str, acme_batch: dict[str, Any]
) -> None:
    key = services.cli_key(stack_env, "acme", "to revoke")
    job_id = acme_batch["jobs"][0]["id"]
    with _client(base_url, key) as client:
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200
        listed = _pagemill(stack_env, "keys", "list", "--tenant", "acme").stdout
        (key_id,) = [line.split("\t")[0] for line in listed.splitlines() if key[:10] in line]
        revoked = _pagemill(stack_env, "keys", "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert _pagemill(stack_env, "keys", "revoke", key_id).returncode == 2  # already revoked
    listed = _pagemill(stack_env, "keys", "list", "--tenant", "acme").stdout
    (line,) = [line.split("\t") for line in listed.splitlines() if key_id in line]
    assert line[5] != "-" and line[6] != "-", line  # revoked, and used before that


def test_last_use_is_written_at_most_once_a_minute(
    stack_env: dict[str, str], base_url: str
) -> None:
    from sqlalchemy import select

    from app.db import session_scope
    from app.keys import hash_key
    from app.models import ApiKey

    services.configure(stack_env)
    key = services.cli_key(stack_env, "acme", "last use")

    def last_used() -> object:
        with session_scope() as session:
            return session.scalars(
                select(ApiKey.last_used_at).where(ApiKey.key_hash == hash_key(key))
            ).one()

    assert last_used() is None
    with _client(base_url, key) as client:
        client.get(f"/v1/jobs/{MISSING}")
        first = last_used()
        assert first is not None
        for _ in range(3):
            assert client.get(f"/v1/jobs/{MISSING}").status_code == 404
    assert last_used() == first


# -- isolation -------------------------------------------------------------------------


def test_jobs_and_batches_carry_the_callers_tenant(
    stack_env: dict[str, str], acme_batch: dict[str, Any]
) -> None:
    from app.db import session_scope
    from app.models import Batch, Job

    services.configure(stack_env)
    with session_scope() as session:
        batch = session.get(Batch, acme_batch["batch_id"])
        assert batch is not None and batch.tenant == "acme"
        for submitted in acme_batch["jobs"]:
            job = session.get(Job, submitted["id"])
            assert job is not None and job.tenant == "acme"
            assert job.result_markdown_key and job.result_json_key
            assert job.result_markdown_key.startswith(f"acme/results/{job.id}/")
            assert job.result_json_key.startswith(f"acme/results/{job.id}/")


def test_another_tenants_ids_answer_exactly_like_missing_ones(
    acme: httpx.Client, globex: httpx.Client, acme_batch: dict[str, Any]
) -> None:
    job_id = acme_batch["jobs"][0]["id"]
    batch_id = acme_batch["batch_id"]
    routes = _routes_with_ids(acme)
    assert len(routes) >= 3, routes
    for method, path in routes:
        ident = batch_id if "{batch_id}" in path else job_id
        foreign = globex.request(method, _fill(path, ident), params={"format": "md"})
        missing = globex.request(method, _fill(path, MISSING), params={"format": "md"})
        assert foreign.status_code == missing.status_code == 404, (method, path, foreign.text)
        assert foreign.text.replace(ident, "ID") == missing.text.replace(MISSING, "ID")
    # Nothing globex tried (deletes and retries included, where the API has them) touched
    # acme's jobs.
    for submitted in acme_batch["jobs"]:
        job = acme.get(f"/v1/jobs/{submitted['id']}").json()
        assert job["state"] == "succeeded", job
    assert acme.get(f"/v1/batches/{batch_id}").json()["state"] == "succeeded"
    result = acme.get(f"/v1/jobs/{job_id}/result", params={"format": "md"})
    assert result.status_code == 200 and "memo" in result.text.lower()


def test_originals_are_stored_once_per_tenant(
    stack_env: dict[str, str],
    globex: httpx.Client,
    upload: bytes,
    acme_batch: dict[str, Any],
) -> None:
    from app.storage import get_storage

    services.configure(stack_env)
    response = globex.post("/v1/jobs", files={"files": ("same.png", upload, "image/png")})
    assert response.status_code == 201, response.text
    (job,) = response.json()["jobs"]
    assert wait_for_jobs([job["id"]]) == {job["id"]: "succeeded"}
    digest = hashlib.sha256(upload).hexdigest()
    storage = get_storage()
    for tenant in ("acme", "globex"):
        assert storage.get(f"{tenant}/originals/{digest[:2]}/{digest}") == upload, tenant


def test_cli_submits_for_a_tenant(
    stack_env: dict[str, str],
    acme: httpx.Client,
    globex: httpx.Client,
    upload: bytes,
    tmp_path: Path,
) -> None:
    path = tmp_path / "cli.png"
    path.write_bytes(upload)
    done = _pagemill(stack_env, "submit", "--tenant", "globex", str(path))
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[0]
    assert globex.get(f"/v1/jobs/{job_id}").status_code == 200
    assert acme.get(f"/v1/jobs/{job_id}").status_code == 404
    refused = _pagemill(stack_env, "submit", "--tenant", "../acme", str(path))
    assert refused.returncode == 2, refused.stdout


# -- presigned result URLs -------------------------------------------------------------


def _presigned(client: httpx.Client, job_id: str, fmt: str = "md") -> str:
    response = client.get(f"/v1/jobs/{job_id}/result", params={"format": fmt, "redirect": "true"})
    assert response.status_code == 307, response.text
    return response.headers["location"]


def test_a_presigned_result_url_works_without_the_key(
    stack_env: dict[str, str], acme: httpx.Client, acme_batch: dict[str, Any]
) -> None:
    job_id = acme_batch["jobs"][0]["id"]
    url = _presigned(acme, job_id)
    assert url.startswith(stack_env["PAGEMILL_S3_ENDPOINT"])
    assert f"/acme/results/{job_id}/document.md" in urlsplit(url).path
    assert dict(parse_qsl(urlsplit(url).query))["X-Amz-Expires"] == "900"
    fetched = httpx.get(url, timeout=30)  # no API key: the signature is the credential
    assert fetched.status_code == 200
    assert fetched.text == acme.get(f"/v1/jobs/{job_id}/result").text
    followed = acme.get(
        f"/v1/jobs/{job_id}/result",
        params={"format": "json", "redirect": "true"},
        follow_redirects=True,
    )
    assert followed.status_code == 200 and followed.json()["job_id"] == job_id


def test_a_tampered_presigned_url_is_refused(
    acme: httpx.Client, acme_batch: dict[str, Any]
) -> None:
    first, second = (job["id"] for job in acme_batch["jobs"])
    url = urlsplit(_presigned(acme, first))
    query = dict(parse_qsl(url.query))
    signature = query["X-Amz-Signature"]
    query["X-Amz-Signature"] = ("0" if signature[0] != "0" else "1") + signature[1:]
    tampered = [
        urlunsplit(url._replace(query=urlencode(query))),
        # The same signature for another object: another job, another tenant.
        urlunsplit(url._replace(path=url.path.replace(first, second))),
        urlunsplit(url._replace(path=url.path.replace("/acme/", "/globex/"))),
        urlunsplit(url._replace(path=url.path.replace("document.md", "document.json"))),
    ]
    for candidate in tampered:
        response = httpx.get(candidate, timeout=30)
        assert response.status_code == 403, (candidate, response.status_code, response.text)
    assert httpx.get(urlunsplit(url), timeout=30).status_code == 200


def test_an_expired_presigned_url_is_refused(
    stack_env: dict[str, str], keys: dict[str, str], acme_batch: dict[str, Any], tmp_path: Path
) -> None:
    job_id = acme_batch["jobs"][0]["id"]
    env = {**stack_env, "PAGEMILL_PRESIGN_SECONDS": "1"}
    with (
        services.api_server(env, tmp_path / "api.log") as url,
        _client(url, keys["acme"]) as client,
    ):
        presigned = _presigned(client, job_id)
    assert dict(parse_qsl(urlsplit(presigned).query))["X-Amz-Expires"] == "1"
    time.sleep(3)
    response = httpx.get(presigned, timeout=30)
    assert response.status_code == 403, response.text


# -- authentication off ----------------------------------------------------------------


def test_with_auth_off_everyone_is_the_default_tenant(
    stack_env: dict[str, str], acme_batch: dict[str, Any], upload: bytes, tmp_path: Path
) -> None:
    env = {**stack_env, "PAGEMILL_API_AUTH": "off"}
    with services.api_server(env, tmp_path / "api.log") as url, _client(url) as client:
        assert client.get(f"/v1/jobs/{acme_batch['jobs'][0]['id']}").status_code == 404
        response = client.post("/v1/jobs", files={"files": ("x.png", upload, "image/png")})
        assert response.status_code == 201, response.text
        (job,) = response.json()["jobs"]
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 200
    from app.db import session_scope
    from app.models import Job

    services.configure(stack_env)
    with session_scope() as session:
        row = session.get(Job, job["id"])
        assert row is not None and row.tenant == "default"
    wait_for_jobs([job["id"]])
