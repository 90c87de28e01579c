"""No secret reaches a log: a whole job runs through the API with an API key, on a database
URL with a password, a Redis broker that requires a password, and S3 credentials; then
every log (API, cpu and gpu workers, Flower) is searched for each secret."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import wait_for_jobs
from tests.support import documents, services

pytestmark = pytest.mark.integration

PAGEMILL = str(Path(sys.executable).parent / "pagemill")


@pytest.fixture
def secret_database() -> Iterator[tuple[str, str]]:
    """A database owned by a role with a password; yields its URL and the password. (The
    shared server trusts loopback, so the password is not checked, but a URL carrying one
    is a secret all the same.)"""
    services.ensure_postgres()
    suffix = secrets.token_hex(5)
    role, name, password = f"pm_secret_{suffix}", f"pagemill_secret_{suffix}", secrets.token_hex(16)
    with psycopg.connect(services.PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{name}" OWNER {role}')
    try:
        yield f"postgresql+psycopg://{role}:{password}@127.0.0.1:5432/{name}", password
    finally:
        with psycopg.connect(services.PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
def secret_redis(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A private redis-server that requires a password; yields its URL and the password."""
    port, password = services.free_port(), secrets.token_hex(16)
    config = tmp_path / "redis.conf"  # the password in a file, not in redis-server's argv
    config.write_text(
        f'port {port}\nbind 127.0.0.1\nrequirepass {password}\nsave ""\nappendonly no\n'
        f"dir {tmp_path}\n"
    )
    process = subprocess.Popen(
        ["redis-server", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        services.wait_for_port(port, 30, process)  # type: ignore[arg-type]
        yield f"redis://:{password}@127.0.0.1:{port}/0", password
    finally:
        process.terminate()
        process.wait(20)


def test_no_secret_appears_in_any_log(
    s3: services.SeaweedFS,
    secret_database: tuple[str, str],
    secret_redis: tuple[str, str],
    tmp_path: Path,
) -> None:
    database_url, database_password = secret_database
    broker_url, broker_password = secret_redis
    flower_password = secrets.token_urlsafe(16)
    env = {
        "PAGEMILL_DATABASE_URL": database_url,
        "PAGEMILL_BROKER_URL": broker_url,
        "PAGEMILL_S3_ENDPOINT": s3.endpoint,
        "PAGEMILL_S3_ACCESS_KEY": services.S3_KEY,
        "PAGEMILL_S3_SECRET_KEY": services.S3_SECRET,
        "PAGEMILL_S3_BUCKET": "pagemill-secrets",
        "PAGEMILL_DATA_DIR": str(tmp_path / "data"),
        "PAGEMILL_FLOWER_BASIC_AUTH": f"ops:{flower_password}",
        "PAGEMILL_RETRY_BACKOFF_SECONDS": "0.5",
    }
    services.configure(env)
    from app.db import migrate
    from app.keys import create_key

    migrate()
    api_key = create_key("secretive", "log test").key
    wrong_key = "pm_" + secrets.token_urlsafe(24)
    logs = tmp_path / "logs"
    logs.mkdir()
    pdf = documents.make_scanned_pdf(
        tmp_path / "report.pdf", [(documents.SAMPLE_TITLE, documents.SAMPLE_PARAGRAPHS[:1])]
    )
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    port, flower_port = services.free_port(), services.free_port()
    servers = [
        subprocess.Popen(
            [PAGEMILL, *argv],
            env=child_env,
            stdout=(logs / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for name, argv in (
            ("api", ["api", "--port", str(port)]),
            ("flower", ["flower", "--port", str(flower_port)]),
        )
    ]
    try:
        with services.workers(env, {"cpu": 1, "gpu": 1}, log_dir=logs):
            services.wait_for_port(port, 60, servers[0])  # type: ignore[arg-type]
            services.wait_for_port(flower_port, 60, servers[1])  # type: ignore[arg-type]
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {api_key}"}, timeout=60
            ) as client:
                files = [
                    ("files", ("report.pdf", pdf.read_bytes(), "application/pdf")),
                    ("files", ("broken.pdf", b"%PDF-1.7 broken", "application/pdf")),
                ]
                response = client.post("/v1/jobs", files=files)
                assert response.status_code == 201, response.text
                ids = [job["id"] for job in response.json()["jobs"]]
                states = wait_for_jobs(ids)
                assert sorted(states.values()) == ["failed", "succeeded"], states
                assert client.get(f"/v1/jobs/{ids[0]}/result").status_code == 200
                redirect = client.get(f"/v1/jobs/{ids[0]}/result", params={"redirect": "true"})
                assert redirect.status_code == 307
                assert client.get("/healthz").status_code == 200
            refused = httpx.get(
                f"{base}/v1/jobs/{ids[0]}", headers={"Authorization": f"Bearer {wrong_key}"}
            )
            assert refused.status_code == 401
            flower = f"http://127.0.0.1:{flower_port}"
            assert httpx.get(f"{flower}/metrics", timeout=30).status_code == 401
            workers = httpx.get(
                f"{flower}/api/workers?refresh=1", auth=("ops", flower_password), timeout=30
            )
            assert workers.status_code == 200
            time.sleep(1)  # the last log lines
    finally:
        for server in servers:
            server.terminate()
            server.wait(20)

    written = {path.name: path.read_text(errors="replace") for path in logs.iterdir()}
    assert {"api.log", "flower.log", "worker-cpu.log", "worker-gpu.log"} <= set(written)
    # The logs say what happened, so an empty log does not pass for a clean one.
    assert "POST /v1/jobs" in written["api.log"] and "401" in written["api.log"]
    assert "succeeded" in written["worker-cpu.log"]
    assert "Broker" in written["flower.log"]
    for secret in (
        api_key,
        wrong_key,
        database_password,
        broker_password,
        services.S3_SECRET,
        flower_password,
    ):
        for name, text in written.items():
            assert secret not in text, f"a secret appears in {name}"


def test_settings_never_show_secrets() -> None:
    from app.settings import Settings

    settings = Settings(
        database_url="postgresql+psycopg://pagemill:db-password@db/pagemill",
        broker_url="redis://:broker-password@redis:6379/0",
        s3_secret_key="s3-secret",  # type: ignore[arg-type]
        openai_api_key="openai-key",  # type: ignore[arg-type]
        flower_basic_auth="ops:flower-password",  # type: ignore[arg-type]
    )
    shown = repr(settings) + str(settings)
    for secret in ("db-password", "broker-password", "s3-secret", "openai-key", "flower-password"):
        assert secret not in shown, secret
    assert settings.resolved_database_url.endswith("db-password@db/pagemill")
