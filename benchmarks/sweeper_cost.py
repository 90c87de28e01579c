"""What one sweep of `pagemill sweeper` costs on a large database: a scratch Postgres database
with JOBS finished jobs of PAGES pages each (one in a thousand still running, its unfinished
pages held by a live worker), then a few timed sweeps. Writes
benchmarks/results/sweeper-cost.json.

    python -m benchmarks.sweeper_cost [--jobs 1000000] [--pages 10]

Needs Postgres (PAGEMILL_TEST_POSTGRES, default the local server) and Redis
(PAGEMILL_BENCH_REDIS, default redis://127.0.0.1:6379/0, under a key prefix of its own).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "sweeper-cost.json"
ADMIN = os.environ.get("PAGEMILL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("PAGEMILL_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def fill(url: str, jobs: int, pages: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO jobs (id, tenant, filename, content_sha256, size_bytes, options,
                 state, attempts, assemble_attempts, pages_total, pages_done, pages_failed,
                 created_at, updated_at)
               SELECT md5(i::text), 'default', 'f.pdf', md5(i::text) || md5(i::text), 1, '{}',
                 CASE WHEN i %% 1000 = 0 THEN 'running' ELSE 'succeeded' END, 1, 1, %(pages)s,
                 CASE WHEN i %% 1000 = 0 THEN %(pages)s / 2 ELSE %(pages)s END, 0,
                 now() - interval '1 day', now() - interval '1 day'
               FROM generate_series(1, %(jobs)s) i""",
            {"jobs": jobs, "pages": pages},
        )
        conn.execute(
            """INSERT INTO pages (job_id, number, tenant, state, attempts, recognize_attempts,
                 held_by, heartbeat_at, updated_at)
               SELECT md5(j::text), n, 'default',
                 CASE WHEN j %% 1000 = 0 AND n > %(pages)s / 2 THEN 'running' ELSE 'succeeded' END,
                 1, 0,
                 CASE WHEN j %% 1000 = 0 AND n > %(pages)s / 2 THEN 'busy:1:1' END,
                 now(), now() - interval '1 day'
               FROM generate_series(1, %(jobs)s) j, generate_series(1, %(pages)s) n""",
            {"jobs": jobs, "pages": pages},
        )
        conn.execute("ANALYZE")


def main(argv: list[str] | None = None) -> int:
    import psycopg

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    name = f"pagemill_sweepbench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{ADMIN.rsplit('/', 1)[0]}/{name}"
    try:
        os.environ.update(
            PAGEMILL_DATABASE_URL=url.replace("postgresql://", "postgresql+psycopg://"),
            PAGEMILL_BROKER_URL=REDIS,
            PAGEMILL_BROKER_KEY_PREFIX=f"{name}:",
            PAGEMILL_DATA_DIR=f"/tmp/{name}",
            # The held pages stand for live workers, whose heartbeats the fill outlasts.
            PAGEMILL_LEASE_SECONDS="86400",
        )
        from app.db import migrate
        from app.sweeper import Sweeper

        migrate()
        started = time.monotonic()
        fill(url, args.jobs, args.pages)
        fill_s = time.monotonic() - started
        sweeper = Sweeper()
        sweeper.sweep()  # warm: connections, plans
        times = []
        for _ in range(args.repeat):
            started = time.monotonic()
            sent = sweeper.sweep()
            times.append((time.monotonic() - started) * 1000)
            assert sent == {}, sent  # nothing there is stuck
        result = {
            "jobs": args.jobs,
            "pages": args.jobs * args.pages,
            "running_jobs": args.jobs // 1000,
            "fill_seconds": round(fill_s, 1),
            "sweep_ms_median": round(statistics.median(times), 1),
            "sweep_ms_max": round(max(times), 1),
        }
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        import redis

        client = redis.Redis.from_url(REDIS)
        for key in client.scan_iter(match=f"{name}:*"):
            client.delete(key)
    print(json.dumps(result, indent=1))
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
