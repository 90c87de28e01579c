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
    role: str,
    settings: Settings,
    *,
    concurrency: int | None = None,
    hostname: str | None = None,
    index: int = 0,
) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment of one Celery worker for the `cpu` or `gpu` queue.

    The gpu worker runs vLLM in its own process (vLLM cannot live in a prefork child), so it
    takes the threads pool with one thread per page it holds; the engine batches across them.
    The `layout` role is the cpu queue's work on a GPU host: one process, threads pool, one
    layout engine batching the pages of every thread (`layout_concurrency` of them).
    CPU recognizers (rapidocr) and the cpu role use prefork, one process per core.

    The `index`-th worker of a command (one per GPU) serves its /metrics and /healthz on
    PAGEMILL_WORKER_METRICS_PORT + index, with its processes' metric files in a folder of
    its own.
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
    port = settings.worker_metrics_port + index if settings.worker_metrics_port else 0
    env["PAGEMILL_WORKER_METRICS_PORT"] = str(port)
    if port:
        folder = (settings.data_dir / "metrics" / f"{role}-{port}").resolve()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return argv, env


def sweeper_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """`pagemill sweeper`: a one-process worker on the sweeper's own queue with Celery beat
    embedded, which sends it a sweep every PAGEMILL_SWEEP_INTERVAL_SECONDS."""
    schedule = (settings.data_dir / "sweeper-beat").resolve()
    schedule.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "app.sweeper:celery_app",
        "worker",
        "--beat",
        "--schedule",
        str(schedule),
        "-Q",
        "sweeper",
        "--pool",
        "solo",
        "--hostname",
        "sweeper@%h",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]
    return argv, {}


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


def supervise(
    commands: Sequence[tuple[Sequence[str], Mapping[str, str]]],
    *,
    max_delay: float = 60.0,
    stop_timeout: float = 60.0,
    max_failed_starts: int = 3,
    min_uptime: float = 60.0,
) -> int:
    """Runs each command and starts it again when it ends with a failure: a worker whose
    engine died (exit 3), or that a library error ended (Celery's "Unrecoverable error"
    during a broker restart), comes back by itself. The delay doubles from one second up to
    `max_delay` and starts over after a run of five minutes. Exit code 2 (the database is
    not migrated) is not retried, and a command that fails `max_failed_starts` times in a
    row within `min_uptime` of starting (an engine that cannot load) ends the supervisor
    with its exit code, so the operator's supervisor (Kubernetes, compose) shows a crash
    loop instead of a worker that seems up. SIGTERM or SIGINT stop every command (Celery's
    warm shutdown) and return 0; when every command ended by itself with 0, that is
    returned."""
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    running: list[subprocess.Popen[bytes] | None] = [start(argv, env) for argv, env in commands]
    started = [time.monotonic()] * len(commands)
    delays = [1.0] * len(commands)
    failed_starts = [0] * len(commands)
    due: list[float | None] = [None] * len(commands)
    code = 0
    try:
        while not stopping:
            now = time.monotonic()
            for i, (argv, env) in enumerate(commands):
                process = running[i]
                if process is None:
                    if due[i] is not None and now >= due[i]:  # type: ignore[operator]
                        running[i], started[i], due[i] = start(argv, env), now, None
                    continue
                returncode = process.poll()
                if returncode is None:
                    continue
                running[i] = None
                if returncode == 0:
                    continue
                if returncode == 2:
                    print(f"pagemill: {argv[-1]!r} refused to start (exit 2)", file=sys.stderr)
                    return 2
                failed_starts[i] = failed_starts[i] + 1 if now - started[i] < min_uptime else 0
                if failed_starts[i] >= max_failed_starts:
                    print(
                        f"pagemill: worker failed {failed_starts[i]} times within "
                        f"{min_uptime:.0f} s of starting (exit {returncode}); giving up",
                        file=sys.stderr,
                        flush=True,
                    )
                    return returncode
                if now - started[i] > 300:
                    delays[i] = 1.0
                print(
                    f"pagemill: worker exited with {returncode}; restarting in {delays[i]:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
                due[i] = now + delays[i]
                delays[i] = min(max_delay, delays[i] * 2)
            if all(p is None for p in running) and all(d is None for d in due):
                return code
            time.sleep(0.5)
        return 0
    finally:
        stop([p for p in running if p is not None], timeout=stop_timeout)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
