"""`pagemill worker`: supervised Celery workers. `--gpus 0,1` starts one worker process per
listed GPU, each pinned to its device; a worker that dies (a killed process, an engine that
died with exit code 3, a library error during a broker restart) is started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.processes import child_pids
from tests.support import services

pytestmark = pytest.mark.integration


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_one_pinned_worker_per_gpu_and_a_dead_one_is_started_again(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**stack_env, **services.broker_env("gpus")}
    parent = _pagemill_worker(env, tmp_path, "gpu", "--gpus", "0,1")
    try:
        workers = _wait_children(parent.pid, 2)
        devices = sorted(_environ(pid).get("CUDA_VISIBLE_DEVICES", "") for pid in workers)
        assert devices == ["0", "1"]
        dead_device = _environ(workers[0])["CUDA_VISIBLE_DEVICES"]

        os.killpg(workers[0], signal.SIGKILL)  # one GPU's worker dies
        deadline = time.monotonic() + 60
        now: list[int] = []
        while time.monotonic() < deadline:
            now = [p for p in child_pids(parent.pid) if not _zombie(p)]
            if len(now) == 2 and workers[0] not in now:
                break
            time.sleep(0.2)
        assert workers[1] in now, "the other GPU's worker was stopped"
        (restarted,) = set(now) - {workers[1]}
        assert _environ(restarted)["CUDA_VISIBLE_DEVICES"] == dead_device
        assert parent.poll() is None

        os.kill(parent.pid, signal.SIGTERM)  # a warm shutdown of the whole set
        assert parent.wait(90) == 0
        assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in now)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)


def test_a_cpu_worker_whose_main_process_dies_is_started_again_and_takes_work(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """Celery's main process can die of a library error while the broker restarts
    ("Unrecoverable error: AttributeError(... 'hostname')"): `pagemill worker` restarts it."""
    from app.submit import submit_file
    from tests.conftest import wait_for_jobs
    from tests.support import documents

    env = {**stack_env, **services.broker_env("supervised"), "PAGEMILL_DATA_DIR": str(tmp_path)}
    parent = _pagemill_worker(env, tmp_path, "cpu")
    gpu = services.workers(env, {"gpu": 1}, log_dir=tmp_path)
    try:
        with gpu:
            _wait_children(parent.pid, 1)
            first = _celery_main(parent.pid)
            os.kill(first, signal.SIGKILL)  # the Celery main process, whatever runs it
            time.sleep(1)
            assert parent.poll() is None, "nothing restarts a worker that died"
            (second,) = _wait_children(parent.pid, 1, exclude=first)
            services.configure(env)
            pdf = documents.make_scanned_pdf(tmp_path / "a.pdf", [(None, ["Still here."])])
            job_id = submit_file(pdf).job_id
            assert wait_for_jobs([job_id], timeout=240) == {job_id: "succeeded"}
            assert second in child_pids(parent.pid)
    finally:
        services.configure(stack_env)
        if parent.poll() is None:
            os.kill(parent.pid, signal.SIGTERM)
            parent.wait(90)


def _pagemill_worker(env: dict[str, str], tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """`pagemill worker ARGS` of this checkout (the console script may be another's)."""
    log = open(tmp_path / "pagemill-worker.log", "ab")  # noqa: SIM115 - the child's
    argv = [sys.executable, "-c", "from app.cli import main; main()", "worker", *args]
    return subprocess.Popen(
        [*argv, "--concurrency", "1"],
        env={**os.environ, **env, "PAGEMILL_DATA_DIR": str(tmp_path)},
        cwd=services.ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _celery_main(pid: int) -> int:
    """The Celery worker's main process: `pid` itself, or its child running Celery."""
    for candidate in [pid, *child_pids(pid)]:
        if b"celery" in Path(f"/proc/{candidate}/cmdline").read_bytes():
            return candidate
    raise LookupError(f"no Celery worker under {pid}")


def _wait_children(pid: int, count: int, exclude: int | None = None) -> list[int]:
    deadline = time.monotonic() + 60
    found: list[int] = []
    while time.monotonic() < deadline:
        found = [p for p in child_pids(pid) if p != exclude and not _zombie(p)]
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise TimeoutError(f"{pid} has children {found}, wanted {count}")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
