"""Starting and stopping pagemill's own processes: Celery workers, the API, Flower.

`pagemill worker`, `pagemill run` and the tests all start workers through here, so a worker
is launched the same way everywhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path

from app.settings import Settings


def worker_command(
    role: str, settings: Settings, *, concurrency: int | None = None, hostname: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment of one Celery worker for the `cpu` or `gpu` queue.

    The gpu worker runs vLLM in its own process (vLLM cannot live in a prefork child), so it
    takes the threads pool with one thread per page it holds; the engine batches across them.
    The `layout` role is the cpu queue's work on a GPU host: one process, threads pool, one
    layout engine batching the pages of every thread (`layout_concurrency` of them).
    CPU recognizers (rapidocr) and the cpu role use prefork, one process per core.
    """
    if role not in ("cpu", "gpu", "layout"):
        raise ValueError(f"unknown worker role {role!r}: cpu, gpu or layout")
    threaded = role == "layout" or (role == "gpu" and settings.recognizer in ("vllm", "openai"))
    pool = "threads" if threaded else "prefork"
    queue = "cpu" if role == "layout" else role
    if concurrency is None:
        if role == "layout":
            concurrency = settings.layout_concurrency
        else:
            concurrency = settings.page_concurrency if threaded else max(1, os.cpu_count() or 1)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.tasks",
        "worker",
        "-Q",
        queue,
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--hostname",
        hostname or f"{role}@%h",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]
    if role == "cpu":
        # A child restarts after this many tasks, so a leak in a native library cannot grow
        # a long-running worker without bound.
        argv += ["--max-tasks-per-child", "200"]
    env = {"PAGEMILL_WORKER_ROLE": role, "PAGEMILL_POOL": pool}
    return argv, env


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (Linux /proc), e.g. a Celery worker's pool."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def start(
    argv: Sequence[str], extra_env: Mapping[str, str] | None = None, log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, **(extra_env or {})}
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        return subprocess.Popen(
            list(argv), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return subprocess.Popen(list(argv), env=env, start_new_session=True)


def stop(
    processes: Sequence[subprocess.Popen[bytes]], timeout: float = 20.0, *, idle: bool = False
) -> None:
    """SIGTERM (Celery's warm shutdown: finish what is running), then SIGKILL to the process
    group after `timeout`. With idle=True the caller knows the workers hold no work (every
    job has ended), so they are killed at once rather than waiting seconds for a warm
    shutdown; were a message unacknowledged, the broker would still hand it out again."""
    for process in processes:
        if process.poll() is None:
            _signal_group(process, signal.SIGKILL if idle else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            process.wait(remaining)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(5)


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
