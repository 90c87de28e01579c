"""Bulk ingestion from an s3:// prefix: keys listed per second, documents submitted per
second and the submitter's peak RSS, on prefixes of two sizes (so a flat memory shows), and
the same prefix submitted again (every document skipped).

    .venv/bin/python -m benchmarks.ingest --keys 1000 --keys 20000

Starts a private SeaweedFS and uses a fresh Postgres database and a Redis broker prefix of
its own that no worker reads (jobs are created and their `prepare` sent, not processed).
Each key is a distinct ~100-byte PNG. The submitter is `pagemill submit s3://...` in its own
process with no rate limit (PAGEMILL_INGEST_RATE=0) and no queue bound, so the figures are
its own speed. Writes benchmarks/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.procs import PeakRss

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _submit(env: dict[str, str], url: str) -> dict[str, Any]:
    pagemill = str(Path(sys.executable).parent / "pagemill")
    started = time.perf_counter()
    process = subprocess.Popen(
        [pagemill, "submit", url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    with PeakRss(process.pid, interval=0.1) as rss:
        stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    counts = dict(line.split("\t", 1) for line in stdout.splitlines() if "\t" in line)
    if process.returncode != 0:
        raise RuntimeError(f"pagemill submit failed ({process.returncode}): {stderr[-2000:]}")
    documents = sum(int(counts[k]) for k in ("submitted", "skipped", "failed"))
    return {
        "seconds": round(seconds, 2),
        "submitted": int(counts["submitted"]),
        "skipped": int(counts["skipped"]),
        "failed": int(counts["failed"]),
        "documents_per_second": round(documents / seconds, 1),
        "peak_rss_mib": max((p["peak_rss_mib"] for p in rss.report()), default=0),
    }


def _list_rate(bucket: str, prefix: str) -> tuple[int, float]:
    """Keys per second through the submitter's lister (S3Storage.list_objects)."""
    from app.storage import S3Storage, get_storage

    storage = get_storage()
    assert isinstance(storage, S3Storage)
    started = time.perf_counter()
    count = sum(1 for _ in storage.list_objects(bucket, prefix))
    return count, count / (time.perf_counter() - started)


def run(sizes: list[int]) -> dict[str, Any]:
    from tests.support import buckets, services

    results: dict[str, Any] = {"command": " ".join(sys.argv), "cores": os.cpu_count()}
    with (
        tempfile.TemporaryDirectory(prefix="pagemill-ingest-", ignore_cleanup_errors=True) as tmp,
        services.seaweedfs(Path(tmp) / "seaweedfs") as s3,
        services.postgres_database() as database,
    ):
        env = {
            "PAGEMILL_DATABASE_URL": database,
            **services.broker_env("bench-ingest"),
            "PAGEMILL_S3_ENDPOINT": s3.endpoint,
            "PAGEMILL_S3_ACCESS_KEY": services.S3_KEY,
            "PAGEMILL_S3_SECRET_KEY": services.S3_SECRET,
            "PAGEMILL_S3_BUCKET": "pagemill",
            "PAGEMILL_DATA_DIR": str(Path(tmp) / "data"),
            "PAGEMILL_INGEST_RATE": "0",
            "PAGEMILL_INGEST_MAX_QUEUED": "0",
        }
        services.configure(env)
        from app.db import migrate

        migrate()
        client = buckets.client(s3.endpoint)
        process_env = services.process_env(env)
        try:
            for size in sizes:
                bucket = f"bench-{size}"
                buckets.ensure_bucket(client, bucket)
                started = time.perf_counter()
                buckets.fill_prefix(client, bucket, "docs/", size)
                generated = time.perf_counter() - started
                listed, keys_per_second = _list_rate(bucket, "docs/")
                print(f"{size} keys: generated in {generated:.1f} s", flush=True)
                print(f"  listed {listed} keys: {keys_per_second:.0f} keys/s", flush=True)
                first = _submit(process_env, f"s3://{bucket}/docs/")
                print(f"  submitted: {first}", flush=True)
                again = _submit(process_env, f"s3://{bucket}/docs/")
                print(f"  submitted again: {again}", flush=True)
                results[str(size)] = {
                    "keys": size,
                    "generate_seconds": round(generated, 1),
                    "keys_listed_per_second": round(keys_per_second),
                    "first": first,
                    "again": again,
                }
        finally:
            services.drop_brokers()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, action="append", help="prefix sizes (repeatable)")
    args = parser.parse_args()
    results = run(args.keys or [1_000, 20_000])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ingest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS / 'ingest.json'}")


if __name__ == "__main__":
    main()
