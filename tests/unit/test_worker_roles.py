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
    assert env == {"PAGEMILL_WORKER_ROLE": "layout", "PAGEMILL_POOL": "threads"}


def test_cpu_role_stays_prefork() -> None:
    argv, env = worker_command("cpu", Settings(layout_engine="transformers"), concurrency=2)
    assert _opt(argv, "-Q") == "cpu" and _opt(argv, "--pool") == "prefork"
    assert env["PAGEMILL_WORKER_ROLE"] == "cpu"
    with pytest.raises(ValueError, match="cpu, gpu or layout"):
        worker_command("render", Settings())
