"""Private Redis and Postgres servers a test owns, so it can stop, kill and restart them
(the shared ones on 6379 / 5432 are never touched). Recipes from ENVIRONMENT.md."""

from __future__ import annotations

import glob
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.support.services import free_port, wait_for_port


@dataclass
class PrivateRedis:
    """A redis-server of the test's own on its own port and folder. With persistent=True
    (append-only file) it comes back from a kill with its data; without, it comes back
    empty, as a Redis without persistence does."""

    port: int
    folder: Path
    persistent: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--dir", str(self.folder), "--save", ""]
        argv += ["--appendonly", "yes" if self.persistent else "no"]
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 - the server's
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, 30, self.process)

    def kill(self) -> None:
        """SIGKILL: no goodbye, as when its machine or container dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    stop = kill

    def command(self, *args: str) -> str:
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return result.stdout.strip()


@contextmanager
def redis_server(folder: Path, *, persistent: bool = False) -> Iterator[PrivateRedis]:
    folder.mkdir(parents=True, exist_ok=True)
    server = PrivateRedis(free_port(), folder, persistent)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"{name} not found: install postgresql")
    return found[-1]


def _as_postgres(*argv: str) -> None:
    # initdb and pg_ctl refuse root; the cluster's files belong to the postgres user.
    subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv], check=True, timeout=120, capture_output=True
    )


@dataclass
class PrivatePostgres:
    """A Postgres cluster of the test's own (initdb + pg_ctl) that it may stop and restart;
    with a password it asks for one (scram), else it trusts."""

    port: int
    folder: Path
    password: str | None = None

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, password: str | None = None, database: str = "postgres") -> str:
        secret = self.password if password is None else password
        user = f"postgres:{secret}" if secret else "postgres"
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *args: str) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder}"
        _as_postgres(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "log"),
            "-o", options, "-w", *args,
        )  # fmt: skip

    def start(self) -> None:
        self.pg_ctl("start")

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast")

    def create_database(self, name: str) -> str:
        import psycopg

        admin = self.url().replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(database=name)


@contextmanager
def postgres_cluster(password: str | None = None) -> Iterator[PrivatePostgres]:
    """A fresh cluster on a port of its own, under /tmp (the postgres user must reach it)."""
    folder = Path(tempfile.mkdtemp(prefix="pagemill-pg-"))
    shutil.chown(folder, "postgres", "postgres")
    cluster = PrivatePostgres(free_port(), folder, password)
    auth = ["--auth=trust"]
    if password is not None:
        secret = folder / "pw"
        secret.write_text(password + "\n")
        shutil.chown(secret, "postgres", "postgres")
        auth = ["--auth=scram-sha-256", f"--pwfile={secret}"]
    try:
        _as_postgres(
            _pg_bin("initdb"), "-D", str(cluster.data), "-U", "postgres", *auth, "-E", "UTF8"
        )
        cluster.start()
        yield cluster
    finally:
        with suppress(Exception):
            cluster.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(folder, ignore_errors=True)
