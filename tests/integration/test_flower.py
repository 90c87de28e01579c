"""Flower, started by `pagemill flower`: it sees the running workers, asks for credentials on
every page (its /metrics too), keeps the password out of `ps`, binds to loopback by default,
and refuses to start without credentials unless told --unauthenticated."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.services import free_port, wait_for_port

pytestmark = pytest.mark.integration

PAGEMILL = str(Path(sys.executable).parent / "pagemill")
PAGES = ("/", "/workers", "/tasks", "/broker", "/api/workers", "/api/tasks", "/metrics")


def _env(pagemill: Mapping[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PAGEMILL_") and not k.startswith("FLOWER_")
    }
    return {**env, **pagemill}


@contextmanager
def _flower(env: Mapping[str, str], cwd: Path, *args: str) -> Iterator[tuple[int, int]]:
    """A `pagemill flower` process; yields its pid and port."""
    port = free_port()
    process = subprocess.Popen(
        [PAGEMILL, "flower", "--port", str(port), *args],
        env=_env(env),
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 60, process)
        yield process.pid, port
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp writes them) listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                found.add(address)
    return found


def test_flower_asks_for_credentials_everywhere_and_lists_the_workers(
    stack: dict[str, str], tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(16)
    env = {**stack, "PAGEMILL_FLOWER_BASIC_AUTH": f"ops:{password}"}
    with _flower(env, tmp_path) as (pid, port):
        args = subprocess.run(
            ["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=True
        ).stdout
        assert "flower" in args and password not in args, args
        assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only

        base = f"http://127.0.0.1:{port}"
        for page in PAGES:
            for auth in (None, ("ops", "wrong"), ("nobody", password)):
                response = httpx.get(base + page, auth=auth, timeout=30)
                assert response.status_code == 401, (page, auth, response.status_code)
            response = httpx.get(base + page, auth=("ops", password), timeout=30)
            assert response.status_code == 200, (page, response.status_code)
        metrics = httpx.get(base + "/metrics", auth=("ops", password), timeout=30)
        assert "flower_" in metrics.text
        # The liveness probe stays open: it says "OK" and nothing else.
        assert httpx.get(base + "/healthcheck", timeout=30).text == "OK"

        queues: set[str] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not {"cpu", "gpu"} <= queues:
            response = httpx.get(
                f"{base}/api/workers?refresh=1", auth=("ops", password), timeout=30
            )
            assert response.status_code == 200
            queues = {
                queue["name"]
                for worker in response.json().values()
                for queue in (worker.get("active_queues") or [])
            }
            time.sleep(1)
        assert {"cpu", "gpu"} <= queues


def test_flower_reads_credentials_from_a_file(stack: dict[str, str], tmp_path: Path) -> None:
    password = secrets.token_urlsafe(16)
    credentials = tmp_path / "flower-auth"
    credentials.write_text(f"ops:{password}\n")
    with _flower(stack, tmp_path, "--basic-auth-file", str(credentials)) as (_, port):
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/metrics", timeout=30).status_code == 401
        response = httpx.get(base + "/metrics", auth=("ops", password), timeout=30)
        assert response.status_code == 200


def test_flower_refuses_to_start_without_credentials(stack: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    for extra in ({}, {"PAGEMILL_FLOWER_BASIC_AUTH": "ops"}):  # none, and no password
        done = subprocess.run(
            [PAGEMILL, "flower", "--port", str(port)],
            env=_env({**stack, **extra}),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (extra, done.stdout, done.stderr)
    assert "PAGEMILL_FLOWER_BASIC_AUTH" in done.stderr or "user:password" in done.stderr
    # Told so explicitly, it serves without authentication.
    with _flower(stack, tmp_path, "--unauthenticated") as (_, port):
        response = httpx.get(f"http://127.0.0.1:{port}/api/workers", timeout=30)
        assert response.status_code == 200
