"""How long each stage takes on real pages: render, layout, text layer, queue wait,
recognition, record and assembly, p50 and p95, from a distributed run on the corpus.

    .venv/bin/python -m benchmarks.stage_timings [--pages DIR] [--modes ocr,auto]

The real engines (rapid-layout, rapidocr) in one cpu and one gpu worker process
(`python -m benchmarks.worker ROLE --samples DIR`, which keeps every value the workers
observe into the `pagemill_stage_seconds` histogram), on a private Redis, Postgres and
SeaweedFS. Per mode, every document of DIR (the corpus pages by default) is submitted at
once; the text layer is only read in `auto`. queue_wait is the time a message waited
between the step that sent it and the worker that took it. Writes
benchmarks/results/stage-timings.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.control_plane import _wait
from benchmarks.pipeline import default_pages, documents
from benchmarks.stack import bench_workers, private_stack

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
STAGES = ("render", "layout", "text_layer", "queue_wait", "recognize", "record", "assemble")


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        stage: {
            "n": len(samples[stage]),
            "p50_ms": round(1000 * percentile(samples[stage], 0.5), 1),
            "p95_ms": round(1000 * percentile(samples[stage], 0.95), 1),
            "mean_ms": round(1000 * statistics.fmean(samples[stage]), 1),
        }
        for stage in STAGES
        if samples.get(stage)
    }


def read_samples(folder: Path) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    for path in folder.glob("stages-*.jsonl"):
        for line in path.read_text().splitlines():
            stage, seconds = json.loads(line)
            samples.setdefault(stage, []).append(seconds)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=Path, default=default_pages())
    parser.add_argument("--modes", default="ocr,auto")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--out", type=Path, default=RESULTS / "stage-timings.json")
    args = parser.parse_args()

    from app.schemas import JobOptions
    from app.submit import submit_file

    files = documents(args.pages, args.limit)
    results: dict[str, Any] = {
        "command": "python -m benchmarks.stage_timings " + " ".join(sys.argv[1:]),
        "cores": os.cpu_count(),
        "documents": len(files),
        "source": str(args.pages),
        "modes": {},
    }
    scratch = tempfile.TemporaryDirectory(prefix="pagemill-stages-", ignore_cleanup_errors=True)
    with scratch as tmp, private_stack(Path(tmp)) as stack:
        for mode in args.modes.split(","):
            samples_dir = Path(tmp) / f"samples-{mode}"
            with bench_workers(stack, {"cpu": 1, "gpu": 1}, samples=samples_dir):
                started = time.perf_counter()
                options = JobOptions(text_mode=mode)  # type: ignore[arg-type]
                ids = [submit_file(path, options=options).job_id for path in files]
                states = _wait(ids, started, timeout=3600)
                wall = time.perf_counter() - started
            samples = read_samples(samples_dir)
            results["modes"][mode] = {
                "wall_seconds": round(wall, 1),
                "job_states": {str(k): v for k, v in states.items()},
                "stages": summarize(samples),
            }
            print(f"{mode}: {len(files)} documents in {wall:.1f} s, states {states}")
            for stage, row in results["modes"][mode]["stages"].items():
                p50, p95 = row["p50_ms"], row["p95_ms"]
                print(f"  {stage:<11} n={row['n']:<4} p50 {p50:>8} ms  p95 {p95:>8} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
