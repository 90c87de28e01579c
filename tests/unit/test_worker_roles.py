"""The worker command per role (app.processes.worker_command)."""

from __future__ import annotations

import pytest

from app.processes import worker_command
from app.settings import Settings


def _opt(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_layout_role_serves_the_cpu_queue_with_threads() -> None:
    argv, env = worker_command("layout", Settings(layout_concurrency=12))
    assert _opt(argv, "-Q") == "cpu"
    assert _opt(argv, "--pool") == "threads"
    assert _opt(argv, "--concurrency") == "12"
    assert "--max-tasks-per-child" not in argv  # one process holds the one engine
    assert env["PAGEMILL_WORKER_ROLE"] == "layout" and env["PAGEMILL_POOL"] == "threads"


def test_cpu_role_stays_prefork() -> None:
    argv, env = worker_command("cpu", Settings(layout_engine="transformers"), concurrency=2)
    assert _opt(argv, "-Q") == "cpu" and _opt(argv, "--pool") == "prefork"
    assert env["PAGEMILL_WORKER_ROLE"] == "cpu"
    with pytest.raises(ValueError, match="cpu, gpu or layout"):
        worker_command("render", Settings())


def test_each_worker_of_a_command_has_its_own_metrics_port_and_folder() -> None:
    from pathlib import Path

    settings = Settings(worker_metrics_port=9100, data_dir=Path("/tmp/pm"))
    envs = [worker_command("gpu", settings, index=i)[1] for i in range(2)]
    assert [e["PAGEMILL_WORKER_METRICS_PORT"] for e in envs] == ["9100", "9101"]
    assert envs[0]["PROMETHEUS_MULTIPROC_DIR"] != envs[1]["PROMETHEUS_MULTIPROC_DIR"]
    off = worker_command("cpu", Settings(worker_metrics_port=0))[1]
    assert off["PAGEMILL_WORKER_METRICS_PORT"] == "0" and "PROMETHEUS_MULTIPROC_DIR" not in off
