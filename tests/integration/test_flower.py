"""Flower, started the way `pagemill flower` starts it, sees the running workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.services import free_port, wait_for_port

pytestmark = pytest.mark.integration


def test_flower_lists_the_cpu_and_gpu_workers(stack: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    pagemill = str(Path(sys.executable).parent / "pagemill")
    process = subprocess.Popen(
        [pagemill, "flower", "--port", str(port), "--basic-auth", "ops:secret"],
        env={**os.environ, **stack},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 60, process)
        assert httpx.get(f"http://127.0.0.1:{port}/api/workers").status_code == 401
        queues: set[str] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not {"cpu", "gpu"} <= queues:
            response = httpx.get(
                f"http://127.0.0.1:{port}/api/workers?refresh=1", auth=("ops", "secret"), timeout=30
            )
            assert response.status_code == 200
            queues = {
                queue["name"]
                for worker in response.json().values()
                for queue in (worker.get("active_queues") or [])
            }
            time.sleep(1)
        assert {"cpu", "gpu"} <= queues
    finally:
        process.terminate()
        process.wait(20)
