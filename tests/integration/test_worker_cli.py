"""`pagemill worker gpu --gpus 0,1`: one worker process per listed GPU, each pinned to its
device; when one dies the set exits non-zero so its supervisor restarts it."""

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


def test_one_pinned_worker_per_gpu_and_the_set_dies_together(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **stack_env,
        **services.broker_env("gpus"),
        "PAGEMILL_DATA_DIR": str(tmp_path),
    }
    pagemill = str(Path(sys.executable).parent / "pagemill")
    parent = subprocess.Popen(
        [pagemill, "worker", "gpu", "--gpus", "0,1", "--concurrency", "1"],
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
        devices = sorted(_environ(pid).get("CUDA_VISIBLE_DEVICES", "") for pid in workers)
        assert devices == ["0", "1"]

        os.killpg(workers[0], signal.SIGKILL)  # one GPU's worker dies
        code = parent.wait(60)
        assert code != 0
        time.sleep(0.5)
        assert not Path(f"/proc/{workers[1]}").exists() or _zombie(workers[1])
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
