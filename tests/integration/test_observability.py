"""What an operator watches: Prometheus metrics of the API and of every worker (prefork
children added up), the workers' health probe (`pagemill worker ROLE --check`), and JSON
log lines that carry the job, page, task and tenant. Real worker and API processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.submit import submit_file
from tests.conftest import wait_for_jobs
from tests.support import documents, services

pytestmark = pytest.mark.integration

STAGES = ("render", "layout", "queue_wait", "recognize", "record", "assemble")


def _samples(text: str) -> dict[str, float]:
    """Prometheus text format → {'name{labels}': value} (comments dropped)."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


def _value(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    total = 0.0
    for key, value in samples.items():
        metric, _, rest = key.partition("{")
        if metric != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if all(found.get(k) == v for k, v in labels.items()):
            total += value
    return total


def _scrape(url: str) -> dict[str, float]:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return _samples(response.text)


def _check(env: dict[str, str], role: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "worker", role, "--check"],
        env=services.process_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=services.ROOT,
    )


def _wait_healthy(env: dict[str, str], role: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _check(env, role).returncode == 0:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{role} worker never healthy: {_check(env, role).stdout}")


@pytest.fixture(scope="module")
def observed(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, object]]:
    """A cpu and a gpu worker (`pagemill worker`, supervised) with their metrics ports and
    JSON logs, and an API, on a broker of their own."""
    logs = tmp_path_factory.mktemp("observed")
    env = {
        **stack_env,
        **services.broker_env("observed"),
        "PAGEMILL_DATA_DIR": str(logs / "data"),
        "PAGEMILL_LOG_FORMAT": "json",
    }
    ports = {"cpu": services.free_port(), "gpu": services.free_port()}
    envs = {
        role: {**env, "PAGEMILL_WORKER_METRICS_PORT": str(port)} for role, port in ports.items()
    }
    with (
        services.pagemill_processes(
            envs["cpu"], [(["worker", "cpu", "--concurrency", "2"], logs / "cpu.log")]
        ),
        services.pagemill_processes(
            envs["gpu"], [(["worker", "gpu", "--concurrency", "1"], logs / "gpu.log")]
        ),
        services.api_server(env, logs / "api.log") as api,
    ):
        for role in ports:
            _wait_healthy(envs[role], role)
        yield {"env": env, "envs": envs, "ports": ports, "api": api, "logs": logs}
    services.configure(stack_env)


def test_metrics_move_around_a_real_job(observed: dict[str, object], tmp_path: Path) -> None:
    ports: dict[str, int] = observed["ports"]  # type: ignore[assignment]
    worker_urls = {role: f"http://127.0.0.1:{port}/metrics" for role, port in ports.items()}
    before = {role: _scrape(url) for role, url in worker_urls.items()}

    services.configure(observed["env"])  # type: ignore[arg-type]
    pdf = documents.make_scanned_pdf(
        tmp_path / "two.pdf", [(documents.SAMPLE_TITLE, documents.SAMPLE_PARAGRAPHS)] * 2
    )
    job_id = submit_file(pdf).job_id
    assert wait_for_jobs([job_id]) == {job_id: "succeeded"}
    time.sleep(1)  # the last counters are written right after the state change

    after = {role: _scrape(url) for role, url in worker_urls.items()}

    def moved(name: str, **labels: str) -> float:
        return sum(
            _value(after[role], name, **labels) - _value(before[role], name, **labels)
            for role in ports
        )

    assert moved("pagemill_documents_total", state="succeeded") == 1
    assert moved("pagemill_pages_total", state="succeeded") == 2
    assert moved("pagemill_regions_total", source="ocr", state="done") >= 2
    for stage in STAGES:
        assert moved("pagemill_stage_seconds_count", stage=stage) >= 1, stage
    # The prefork children's counts reach the main process's endpoint: render ran in a child.
    assert _value(after["cpu"], "pagemill_stage_seconds_count", stage="render") >= 2
    assert "pagemill_engine_requests_in_flight" in " ".join(after["gpu"])

    api = _scrape(f"{observed['api']}/metrics")
    assert _value(api, "pagemill_queue_depth", queue="cpu") == 0
    assert _value(api, "pagemill_queue_depth", queue="gpu") == 0


def test_worker_check_passes_for_a_live_worker_and_fails_without_one(
    observed: dict[str, object],
) -> None:
    envs: dict[str, dict[str, str]] = observed["envs"]  # type: ignore[assignment]
    for role in ("cpu", "gpu"):
        result = _check(envs[role], role)
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout.split("\t", 2)[2])["status"] == "ok"
    nobody = {**envs["cpu"], "PAGEMILL_WORKER_METRICS_PORT": str(services.free_port())}
    result = _check(nobody, "cpu")
    assert result.returncode == 1 and "unhealthy" in result.stdout


def test_every_task_log_line_carries_job_page_task_and_tenant(
    observed: dict[str, object], tmp_path: Path
) -> None:
    services.configure(observed["env"])  # type: ignore[arg-type]
    pdf = documents.make_scanned_pdf(
        tmp_path / "logged.pdf", [(documents.SAMPLE_TITLE, documents.SAMPLE_PARAGRAPHS)]
    )
    job_id = submit_file(pdf).job_id
    assert wait_for_jobs([job_id]) == {job_id: "succeeded"}
    logs: Path = observed["logs"]  # type: ignore[assignment]
    lines = []
    for name in ("cpu.log", "gpu.log"):
        for raw in (logs / name).read_text().splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
    assert lines, "no JSON log line"
    mine = [line for line in lines if line.get("job_id") == job_id]
    tasks = {line["task"] for line in mine}
    assert {"pagemill.prepare", "pagemill.page", "pagemill.recognize", "pagemill.assemble"} <= (
        tasks
    ), tasks
    ours = [line for line in mine if line["logger"] == "workers.pipeline"]
    assert {line["message"].split(":")[0].split(" ")[0] for line in ours} >= {
        "prepared",
        "laid",
        "recognized",
        "assembled",
    }, [line["message"] for line in ours]
    assert all(line.get("tenant") == "default" for line in ours), ours
    per_page = [line for line in ours if line["task"] in ("pagemill.page", "pagemill.recognize")]
    assert per_page and all(line.get("page") == 1 for line in per_page), per_page
    # Celery's own "Task ... succeeded" lines, written while the task runs, carry it too.
    assert any("succeeded" in line["message"] for line in mine), [m["message"] for m in mine]
