"""The distributed stack a benchmark owns: a private Redis, Postgres cluster and SeaweedFS
(the tests' own servers, tests/support), and pagemill workers started through
`python -m benchmarks.worker`. Every server is the benchmark's, so the CPU each one uses
can be read from /proc without counting anyone else's work."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import private, services


@dataclass
class Stack:
    env: dict[str, str]
    pids: dict[str, int]  # server role → root process id (redis, postgres, storage)
    folder: Path
    workers: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)


@contextmanager
def private_stack(folder: Path) -> Iterator[Stack]:
    """Redis, Postgres (migrated) and SeaweedFS of this benchmark's own; this process is
    configured to use them."""
    with ExitStack() as stack:
        redis = stack.enter_context(private.redis_server(folder / "redis"))
        postgres = stack.enter_context(private.postgres_cluster())
        s3 = stack.enter_context(services.seaweedfs(folder / "seaweedfs"))
        env = {
            "PAGEMILL_DATABASE_URL": postgres.url(),
            "PAGEMILL_BROKER_URL": redis.url,
            "PAGEMILL_S3_ENDPOINT": s3.endpoint,
            "PAGEMILL_S3_ACCESS_KEY": services.S3_KEY,
            "PAGEMILL_S3_SECRET_KEY": services.S3_SECRET,
            "PAGEMILL_S3_BUCKET": "pagemill-bench",
            "PAGEMILL_DATA_DIR": str(folder / "data"),
            "PAGEMILL_WORKER_METRICS_PORT": "0",
        }
        services.configure(env)
        from app.db import migrate

        migrate()
        postmaster = int((postgres.data / "postmaster.pid").read_text().split()[0])
        assert redis.process is not None
        yield Stack(
            env,
            {"redis": redis.process.pid, "postgres": postmaster, "storage": s3.process.pid},
            folder,
        )


@contextmanager
def bench_workers(
    stack: Stack,
    roles: dict[str, int],
    *,
    concurrency: int | None = None,
    nocost_regions: int | None = None,
    samples: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[dict[str, list[subprocess.Popen[bytes]]]]:
    """`roles[role]` worker processes of each role, each with `concurrency` pool processes,
    ready (Celery's "ready." line) when this yields."""
    from app.processes import start, stop

    env = services.process_env({**stack.env, **(extra_env or {})})
    logs = stack.folder / "logs"
    started: dict[str, list[subprocess.Popen[bytes]]] = {}
    waits: list[tuple[Path, subprocess.Popen[bytes]]] = []
    try:
        for role, count in roles.items():
            for i in range(count):
                argv = [sys.executable, "-m", "benchmarks.worker", role]
                argv += ["--hostname", f"{role}{i}-{uuid.uuid4().hex[:6]}@%h"]
                if concurrency:
                    argv += ["--concurrency", str(concurrency)]
                if nocost_regions:
                    argv += ["--nocost-regions", str(nocost_regions)]
                if samples:
                    argv += ["--samples", str(samples)]
                log = logs / f"{role}{i}-{time.time_ns()}.log"
                process = start(argv, env, log_path=log)
                started.setdefault(role, []).append(process)
                waits.append((log, process))
        for log, process in waits:
            services.wait_for_line(log, " ready.", process, 180)
        stack.workers = started
        yield started
    finally:
        stop([p for group in started.values() for p in group], timeout=30)
        stack.workers = {}
