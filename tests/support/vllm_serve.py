"""Starts and stops vLLM's OpenAI server (through our launcher) for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


class ServerFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_server_args(model: Path, port: int, served_name: str) -> list[str]:
    """`vllm serve` arguments for the tiny model on CPU."""
    return [
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-model-name",
        served_name,
        "--enforce-eager",
        "--max-model-len",
        "1024",
        "--dtype",
        "float32",
        "--distributed-executor-backend",
        "uni",
        "--limit-mm-per-prompt",
        '{"image": 1}',
    ]


def start(args: list[str], *, scratch: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Launches `python -m workers.engines.vllm_server ARGS` in its own process group."""
    for sub in ("vllm", "tmp"):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.update(
        VLLM_CACHE_ROOT=str(scratch / "vllm"),
        TMPDIR=str(scratch / "tmp"),
        VLLM_NO_USAGE_STATS="1",
    )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.engines.vllm_server", *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(
    process: subprocess.Popen[bytes], base_url: str, *, timeout: float, log_path: Path
) -> None:
    """Waits until GET /models answers 200; raises ServerFailed with the log's tail."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ServerFailed(f"vLLM server exited ({process.returncode}):\n{tail(log_path)}")
        try:
            if httpx.get(f"{base_url}/models", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise ServerFailed(f"vLLM server not up in {timeout:.0f} s:\n{tail(log_path)}")
        time.sleep(0.25)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's own process group (it has an engine child), then SIGKILL."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
