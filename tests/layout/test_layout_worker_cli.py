"""`pagemill worker layout --gpus 0,1`: one cpu-queue worker per GPU, threads pool, pinned
to its GPU, its layout engine on the one visible device."""

from __future__ import annotations

import contextlib
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


ARGS = ["worker", "layout", "--gpus", "0,1", "--concurrency", "2"]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_one_layout_worker_per_gpu(stack_env: dict[str, str], tmp_path: Path) -> None:
    env = {
        **os.environ,
        **stack_env,
        **services.broker_env("layout-gpus"),
        "PAGEMILL_DATA_DIR": str(tmp_path),
    }
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        # This checkout's CLI (the `pagemill` script may belong to another install).
        [sys.executable, "-c", "from app.cli import main; main()", *ARGS],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2:
            workers = child_pids(parent.pid)
            time.sleep(0.2)
        assert len(workers) == 2
        environs = [_environ(pid) for pid in workers]
        assert sorted(e["CUDA_VISIBLE_DEVICES"] for e in environs) == ["0", "1"]
        for environ, pid in zip(environs, workers, strict=True):
            assert environ["PAGEMILL_LAYOUT_DEVICE"] == "cuda:0"
            assert environ["PAGEMILL_WORKER_ROLE"] == "layout"
            argv = _cmdline(pid)
            assert argv[argv.index("-Q") + 1] == "cpu"
            assert argv[argv.index("--pool") + 1] == "threads"
            assert argv[argv.index("--hostname") + 1].startswith("layout")
    finally:
        for pid in child_pids(parent.pid):  # each worker leads a process group of its own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(30)
