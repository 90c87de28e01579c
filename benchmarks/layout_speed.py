"""Layout speed: milliseconds per page for each available layout engine over the corpus
pages rendered at 200 dpi. Writes benchmarks/results/layout-speed.json.

    python -m benchmarks.layout_speed [--dpi 200] [--repeat 3] [--threads N]
        [--engines rapid,transformers,paddlex] [--batches 1,4,8] [--pages 8] [--model DIR]

The first call of each engine (model load, warm-up) is timed separately and left out of the
per-page figures. `transformers` runs PP-DocLayout-V3 on this machine's CPU at each batch
size over the first `--pages` pages (ms per page = time of the batched calls / pages), with
PAGEMILL_LAYOUT_MODEL or `--model` when it is a folder, else a random-weight model of the
real size (transformers' default config, built offline by tests.support.tiny_layout): the
speed is the architecture's, whatever the weights. Its peak RSS is the process's right
after it (measured first, before any other engine is loaded). PaddleX is measured when
PAGEMILL_PADDLEX_MODEL_DIR points at PP-DocLayout-V3 weights and paddlex is installed;
otherwise it is reported as skipped.
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

from benchmarks.corpus import CORPUS
from benchmarks.procs import self_peak_mib

OUT = Path(__file__).resolve().parent / "results" / "layout-speed.json"


def render_corpus(corpus: Path, dpi: int) -> list[tuple[str, np.ndarray]]:
    import pypdfium2 as pdfium

    manifest = json.loads((corpus / "manifest.json").read_text())
    pages = []
    for entry in manifest["entries"]:
        doc = pdfium.PdfDocument(str(corpus / entry["pdf"]))
        pages.append((entry["id"], doc[0].render(scale=dpi / 72).to_numpy().copy()))
        doc.close()
    return pages


def measure(engine: Any, pages: list[tuple[str, np.ndarray]], repeat: int) -> dict[str, Any]:
    """Per-page median of `repeat` runs, after one warm-up call on the first page."""
    start = time.perf_counter()
    engine.detect(pages[0][1])
    first_ms = (time.perf_counter() - start) * 1000
    per_page: list[dict[str, Any]] = []
    for page_id, image in pages:
        runs = []
        for _ in range(repeat):
            start = time.perf_counter()
            regions = engine.detect(image)
            runs.append((time.perf_counter() - start) * 1000)
        per_page.append(
            {
                "id": page_id,
                "size": [int(image.shape[1]), int(image.shape[0])],
                "ms": round(statistics.median(runs), 1),
                "regions": len(regions),
            }
        )
    ms: list[float] = [float(p["ms"]) for p in per_page]
    return {
        "engine": engine.name,
        "version": engine.version,
        "first_call_ms": round(first_ms, 1),
        "pages": len(per_page),
        "mean_ms": round(statistics.fmean(ms), 1),
        "median_ms": round(statistics.median(ms), 1),
        "p90_ms": round(float(np.percentile(ms, 90)), 1),
        "max_ms": round(max(ms), 1),
        "per_page": per_page,
    }


def measure_batched(
    engine: Any, pages: list[tuple[str, np.ndarray]], batches: list[int]
) -> dict[str, Any]:
    """ms per page of `detect_many` over `pages` in chunks of each batch size, after one
    warm-up call; checks each call was one forward pass."""
    start = time.perf_counter()
    engine.detect(pages[0][1])
    first_ms = (time.perf_counter() - start) * 1000
    images = [image for _, image in pages]
    runs = []
    for size in batches:
        engine.batch_size = size
        passes_before = len(engine.batch_sizes)
        regions = 0
        start, cpu_start = time.perf_counter(), time.process_time()
        for i in range(0, len(images), size):
            regions += sum(len(r) for r in engine.detect_many(images[i : i + size]))
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        passes = list(engine.batch_sizes)[passes_before:]
        runs.append(
            {
                "batch": size,
                "pages": len(images),
                "ms_per_page": round(seconds * 1000 / len(images), 1),
                # CPU time of all threads: the cost on an idle machine, whatever the load.
                "cpu_ms_per_page": round(cpu_seconds * 1000 / len(images), 1),
                "peak_rss_mib_so_far": self_peak_mib(),
                "forward_passes": passes,
                "regions": regions,
            }
        )
    return {
        "engine": engine.name,
        "version": engine.version,
        "device": engine.device,
        "dtype": engine.dtype,
        "first_call_ms": round(first_ms, 1),
        "batches": runs,
    }


def transformers_model(given: Path | None) -> Path:
    """The folder to load: `--model`, else PAGEMILL_LAYOUT_MODEL when it is a folder, else a
    random-weight PP-DocLayout-V3 of the real size, built once under .scratch/."""
    if given is not None:
        return given
    configured = os.environ.get("PAGEMILL_LAYOUT_MODEL")
    if configured and Path(configured).is_dir():
        return Path(configured)
    from tests.support.tiny_layout import build_tiny_layout

    root = Path(__file__).resolve().parent.parent
    return build_tiny_layout(root / ".scratch" / "pp-doclayout-v3-random", size="default")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--dpi", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="ONNX intra-op threads")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--engines", default="rapid,transformers,paddlex")
    parser.add_argument("--batches", default="1,4,8", help="transformers batch sizes")
    parser.add_argument("--pages", type=int, default=8, help="transformers: pages per size")
    parser.add_argument("--model", type=Path, default=None, help="transformers model folder")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    engines = set(args.engines.split(","))

    from app.settings import Settings
    from workers.engines.layout_rapid import RapidLayoutEngine

    settings = Settings()
    pages = render_corpus(args.corpus, args.dpi)
    report: dict[str, Any] = {
        "dpi": args.dpi,
        "repeat": args.repeat,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg()[0],
        },
        "engines": [],
        "skipped": {},
    }
    if "transformers" in engines:
        from workers.engines.layout_transformers import TransformersLayoutEngine

        model = transformers_model(args.model)
        engine = TransformersLayoutEngine(
            model,
            device=settings.layout_device,
            dtype=args.dtype,
            threshold=settings.layout_threshold,
            threads=args.threads or 0,
            batch_wait_ms=0,
        )
        result = measure_batched(
            engine, pages[: args.pages], [int(b) for b in args.batches.split(",")]
        )
        result["model"] = str(model)
        result["peak_rss_mib"] = self_peak_mib()
        engine.close()
        report["batched"] = [result]
        for run in result["batches"]:
            print(
                f"{'transformers':14} {run['ms_per_page']:7.1f} ms/page at batch {run['batch']} "
                f"({run['cpu_ms_per_page']:.0f} CPU-ms/page) over {run['pages']} pages, "
                f"{result['device']} {result['dtype']}, peak RSS {run['peak_rss_mib_so_far']} MiB "
                f"(passes {run['forward_passes']})"
            )
        print(
            f"{'transformers':14} first call {result['first_call_ms']:.0f} ms, peak RSS "
            f"{result['peak_rss_mib']} MiB  [{result['version']}]"
        )

    if "rapid" in engines:
        rapid = RapidLayoutEngine(min_score=settings.layout_min_score, threads=args.threads)
        report["engines"].append(measure(rapid, pages, args.repeat))

    if "paddlex" in engines:
        try:
            from workers.engines.layout_paddlex import PaddleXLayoutEngine

            paddlex = PaddleXLayoutEngine.from_settings(settings)
            report["engines"].append(measure(paddlex, pages, args.repeat))
        except Exception as exc:  # weights or paddlex missing: say so, measure the rest
            report["skipped"]["paddlex"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"

    for e in report["engines"]:
        print(
            f"{e['engine']:14} {e['mean_ms']:7.1f} ms/page mean, {e['median_ms']:.1f} median, "
            f"{e['p90_ms']:.1f} p90 over {e['pages']} pages at {args.dpi} dpi "
            f"(first call {e['first_call_ms']:.0f} ms)  [{e['version']}]"
        )
    for name, why in report["skipped"].items():
        print(f"{name:14} skipped: {why}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
