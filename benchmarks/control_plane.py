"""The control plane's ceiling: how many pages and regions per second submit, Redis,
Celery, Postgres, S3 and assembly carry when the engines cost nothing.

    .venv/bin/python -m benchmarks.control_plane --pages 600 --regions 20 [--scale-out]

Distributed mode on a private Redis, Postgres and SeaweedFS (benchmarks.stack), with cpu
and gpu workers in their own processes started by `python -m benchmarks.worker`, which
installs the no-cost engines (layout: R text regions a page; recognition: answers at once).
Rendering (pdfium, --dpi 72 by default), crops, storage, messages, leases, database writes
and assembly are all real. N pages go in as N / --pages-per-doc generated PDFs, submitted
by this process through app.submit (what the API and `pagemill submit` call), mode `ocr`
so every region goes through recognition. The clock runs from the first submission to the
last job's success. CPU per role is the /proc utime+stime of each process tree (worker
mains and pool children, each private server, this process while it submits).

--render-dpi 200 adds a run at that resolution, so the cpu worker's figure includes
rendering and cropping real-size pages (the CPU a page costs besides layout).
--scale-out also runs one worker process per role against two (each with one pool
process, --scale-pages pages), in the same run. Writes
benchmarks/results/control-plane.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.big_document import write_pdf
from benchmarks.procs import tree_cpu_seconds
from benchmarks.stack import Stack, bench_workers, private_stack

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _documents(folder: Path, pages: int, per_doc: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    stamp = time.time_ns()
    for i in range(0, pages, per_doc):
        path = folder / f"doc-{stamp}-{i}.pdf"
        write_pdf(path, min(per_doc, pages - i), tag=f" {stamp}-{i}")
        paths.append(path)
    return paths


def _cpu(stack: Stack) -> dict[str, float]:
    readings = {
        role: sum(tree_cpu_seconds(p.pid) for p in processes)
        for role, processes in stack.workers.items()
    }
    readings.update({name: tree_cpu_seconds(pid) for name, pid in stack.pids.items()})
    return readings


def _profilers(stack: Stack, folder: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy sampling every worker process tree (collapsed stacks, one file per worker)."""
    folder.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).parent / "py-spy")
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(p.pid),
                "--subprocesses",
                "--nonblocking",
                "--format",
                "raw",
                "--rate",
                "200",
                "-o",
                str(folder / f"{role}{i}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for role, processes in stack.workers.items()
        for i, p in enumerate(processes)
    ]


def _unfinished(job_ids: list[str]) -> dict[str, int]:
    from sqlalchemy import func, select

    from app.db import session_scope
    from app.models import Job

    with session_scope() as session:
        rows = session.execute(
            select(Job.state, func.count()).where(Job.id.in_(job_ids)).group_by(Job.state)
        ).all()
    return {state: count for state, count in rows}


def _wait(job_ids: list[str], started: float, timeout: float) -> dict[str, int]:
    while True:
        states = _unfinished(job_ids)
        if sum(n for s, n in states.items() if s in ("succeeded", "partial", "failed")) == len(
            job_ids
        ):
            return states
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"jobs unfinished after {timeout} s: {states}")
        time.sleep(0.2)


def measure(
    stack: Stack,
    pages: int,
    regions: int,
    per_doc: int,
    dpi: int,
    *,
    processes: int = 1,
    concurrency: int | None = None,
    timeout: float = 1800,
    profile: Path | None = None,
) -> dict[str, Any]:
    """One measured run: workers up and idle, then submit everything and wait."""
    from app.schemas import JobOptions
    from app.submit import submit_file

    docs = _documents(stack.folder / "docs", pages, per_doc)
    warmup = _documents(stack.folder / "warmup", 2 * per_doc * processes, per_doc)
    options = JobOptions(text_mode="ocr", dpi=dpi)
    roles = {"cpu": processes, "gpu": processes}
    with bench_workers(stack, roles, concurrency=concurrency, nocost_regions=regions):
        # Steady state: every pool process has its connections, clients and caches.
        _wait(
            [submit_file(path, options=options).job_id for path in warmup],
            time.perf_counter(),
            timeout,
        )
        time.sleep(1)
        profilers = _profilers(stack, profile) if profile else []
        before = _cpu(stack)
        started = time.perf_counter()
        submit_cpu = time.process_time()
        job_ids = [submit_file(path, options=options).job_id for path in docs]
        submit_cpu = time.process_time() - submit_cpu
        submitted = time.perf_counter() - started
        states = _wait(job_ids, started, timeout)
        wall = time.perf_counter() - started
        after = _cpu(stack)
        for profiler in profilers:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
    if states.get("succeeded") != len(job_ids):
        raise RuntimeError(f"not every job succeeded: {states}")
    cpu = {role: after[role] - before[role] for role in after}
    cpu["submitter"] = submit_cpu
    return {
        "pages": pages,
        "dpi": dpi,
        "regions_per_page": regions,
        "documents": len(docs),
        "worker_processes_per_role": processes,
        "pool_processes_per_worker": concurrency or os.cpu_count(),
        "submit_seconds": round(submitted, 2),
        "wall_seconds": round(wall, 2),
        "pages_per_s": round(pages / wall, 1),
        "regions_per_s": round(pages * regions / wall, 1),
        "cpu_seconds": {role: round(v, 2) for role, v in cpu.items()},
        "cpu_ms_per_page": {role: round(1000 * v / pages, 2) for role, v in cpu.items()},
        "cpu_ms_per_page_total": round(1000 * sum(cpu.values()) / pages, 2),
        "cores_busy": round(sum(cpu.values()) / wall, 2),
        # The machine is shared: its load says how much of the wall time was ours.
        "load_average_1min_after": round(os.getloadavg()[0], 1),
        "pages_per_s_if_cpu_bound": round(
            (os.cpu_count() or 1) * 1000 / (1000 * sum(cpu.values()) / pages), 1
        ),
    }


def _print(label: str, result: dict[str, Any]) -> None:
    per_role = ", ".join(f"{k} {v}" for k, v in result["cpu_ms_per_page"].items())
    print(
        f"{label}: {result['pages_per_s']} pages/s, {result['regions_per_s']} regions/s "
        f"(wall {result['wall_seconds']} s); CPU ms/page: {per_role}; "
        f"total {result['cpu_ms_per_page_total']}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=600)
    parser.add_argument("--regions", type=int, default=20)
    parser.add_argument("--pages-per-doc", type=int, default=10)
    parser.add_argument("--dpi", type=int, default=72)
    parser.add_argument("--scale-out", action="store_true", help="also 1 vs 2 workers per role")
    parser.add_argument("--scale-pages", type=int, default=300)
    parser.add_argument(
        "--render-dpi", type=int, help="also a run at this dpi: render and crops at full size"
    )
    parser.add_argument("--render-pages", type=int, default=100)
    parser.add_argument("--profile", type=Path, help="py-spy the workers, stacks to this folder")
    parser.add_argument("--out", type=Path, default=RESULTS / "control-plane.json")
    args = parser.parse_args()

    results: dict[str, Any] = {
        "command": "python -m benchmarks.control_plane " + " ".join(sys.argv[1:]),
        "cores": os.cpu_count(),
    }
    scratch = tempfile.TemporaryDirectory(prefix="pagemill-cp-", ignore_cleanup_errors=True)
    with scratch as tmp, private_stack(Path(tmp)) as stack:
        results["ceiling"] = measure(
            stack, args.pages, args.regions, args.pages_per_doc, args.dpi, profile=args.profile
        )
        _print("ceiling", results["ceiling"])
        if args.render_dpi:
            results["at_render_dpi"] = measure(
                stack, args.render_pages, args.regions, args.pages_per_doc, args.render_dpi
            )
            _print(f"at {args.render_dpi} dpi", results["at_render_dpi"])
        if args.scale_out:
            runs = {}
            for n in (1, 2):
                runs[n] = measure(
                    stack,
                    args.scale_pages,
                    args.regions,
                    args.pages_per_doc,
                    args.dpi,
                    processes=n,
                    concurrency=1,
                )
                _print(f"{n} worker process(es) per role", runs[n])
            results["scale_out"] = {
                "one_per_role": runs[1],
                "two_per_role": runs[2],
                "ratio": round(runs[2]["pages_per_s"] / runs[1]["pages_per_s"], 2),
            }
            print(f"scale-out ratio (2 vs 1): {results['scale_out']['ratio']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
