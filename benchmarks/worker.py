"""`pagemill worker ROLE` for benchmarks: the same Celery worker, with two additions made
in-process, never through settings:

    python -m benchmarks.worker ROLE [--concurrency N] [--nocost-regions R] [--samples DIR]

--nocost-regions R installs the no-cost engines (benchmarks.nocost: R regions a page,
recognition at once) in the engine registry, so the run measures the control plane alone.
--samples DIR appends every stage duration each process observes (render, layout, ...,
the `pagemill_stage_seconds` histogram's raw values) to DIR/stages-PID.jsonl, so stage
percentiles are exact rather than read from histogram buckets.

Celery loads this module as its app (`-A benchmarks.worker`); the options travel to it,
and to every prefork child, in BENCH_* environment variables that pagemill never reads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from workers.tasks import celery_app

app = celery_app  # what `celery -A benchmarks.worker` runs

REGIONS_ENV = "BENCH_NOCOST_REGIONS"
SAMPLES_ENV = "BENCH_STAGE_SAMPLES"


def _install_nocost(regions: int) -> None:
    from benchmarks.nocost import NoCostLayout, NoCostRecognizer
    from workers.engines import registry

    registry.install("layout", NoCostLayout(regions))
    registry.install("recognizer", NoCostRecognizer())


def _record_samples(folder: Path) -> None:
    """Every metrics.observe() also appends (stage, seconds) to a file of this process."""
    from app import metrics

    observe = metrics.observe

    def observe_and_keep(stage: str, seconds: float) -> None:
        observe(stage, seconds)
        with (folder / f"stages-{os.getpid()}.jsonl").open("a") as f:
            f.write(json.dumps([stage, seconds]) + "\n")

    metrics.observe = observe_and_keep  # type: ignore[assignment]


if os.environ.get(REGIONS_ENV):
    _install_nocost(int(os.environ[REGIONS_ENV]))
if os.environ.get(SAMPLES_ENV):
    _record_samples(Path(os.environ[SAMPLES_ENV]))


def main() -> None:
    from app.processes import worker_command
    from app.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["cpu", "gpu"])
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--nocost-regions", type=int)
    parser.add_argument("--samples", type=Path)
    parser.add_argument("--hostname")
    args = parser.parse_args()
    argv, env = worker_command(
        args.role, get_settings(), concurrency=args.concurrency, hostname=args.hostname
    )
    argv[argv.index("workers.tasks")] = "benchmarks.worker"
    if args.nocost_regions:
        env[REGIONS_ENV] = str(args.nocost_regions)
        # The no-cost layout's regions are the page's text: there are no lines to find, and
        # the real detector's ~0.7 CPU-s a page would be measured as the control plane's.
        env["PAGEMILL_LINE_DETECTION"] = "false"
    if args.samples:
        args.samples.mkdir(parents=True, exist_ok=True)
        env[SAMPLES_ENV] = str(args.samples.resolve())
    os.environ.update(env)
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    main()
