"""Private Redis and Postgres servers a test owns, so it can stop and start them (the shared
ones on 6379 / 5432 are never touched). Recipes from ENVIRONMENT.md."""

from __future__ import annotations

import glob
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.services import free_port, wait_for_port


@dataclass
class PrivateRedis:
    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--dir", str(self.folder), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, 30, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

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
def redis_server(folder: Path) -> Iterator[PrivateRedis]:
    folder.mkdir(parents=True, exist_ok=True)
    server = PrivateRedis(free_port(), folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"{name} not found: install postgresql")
    return found[-1]


def _as_postgres(*argv: str) -> None:
    # initdb refuses root; the cluster's files belong to the postgres user.
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, timeout=120)


@dataclass
class PrivatePostgres:
    port: int
    folder: Path
    password: str

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, password: str | None = None, database: str = "postgres") -> str:
        secret = self.password if password is None else password
        return f"postgresql+psycopg://postgres:{secret}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder}"
        _as_postgres(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "log"),
            "-o", options, "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@contextmanager
def postgres_cluster(password: str) -> Iterator[PrivatePostgres]:
    """A fresh cluster that asks for a password (scram), on a port of its own."""
    folder = Path(tempfile.mkdtemp(prefix="pagemill-pg-"))
    shutil.chown(folder, "postgres", "postgres")
    secret = folder / "pw"
    secret.write_text(password + "\n")
    shutil.chown(secret, "postgres", "postgres")
    cluster = PrivatePostgres(free_port(), folder, password)
    try:
        _as_postgres(
            _pg_bin("initdb"), "-D", str(cluster.data), "-U", "postgres",
            "--auth=scram-sha-256", f"--pwfile={secret}", "-E", "UTF8",
        )  # fmt: skip
        cluster.start()
        yield cluster
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", _pg_bin("pg_ctl"), "-D", str(cluster.data),
             "-m", "immediate", "stop"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
