"""Layout speed: milliseconds per page for each available layout engine over the corpus
pages rendered at 200 dpi. Writes benchmarks/results/layout-speed.json.

    python -m benchmarks.layout_speed [--dpi 200] [--repeat 3] [--threads N]

The first call of each engine (model load, ONNX warm-up) is timed separately and left out
of the per-page figures. PaddleX is measured when PAGEMILL_PADDLEX_MODEL_DIR points at
PP-DocLayout-V3 weights and paddlex is installed; otherwise it is reported as skipped.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--dpi", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="ONNX intra-op threads")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    from app.settings import Settings
    from workers.engines.layout_rapid import RapidLayoutEngine

    settings = Settings()
    pages = render_corpus(args.corpus, args.dpi)
    report: dict[str, Any] = {
        "dpi": args.dpi,
        "repeat": args.repeat,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "engines": [],
        "skipped": {},
    }
    rapid = RapidLayoutEngine(min_score=settings.layout_min_score, threads=args.threads)
    report["engines"].append(measure(rapid, pages, args.repeat))

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
