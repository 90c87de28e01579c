"""Pages per second of `pagemill run` against the same engines in one plain sequential loop,
on the same pages, in one run; and the peak RSS of every process.

    .venv/bin/python -m benchmarks.pipeline [--pages DIR] [--mode ocr|auto] [--limit N]

Writes benchmarks/results/pipeline.json. Default pages: the real corpus pages in
../shared/corpus/pages when present, else samples/.
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

from benchmarks.procs import PeakRss, self_peak_mib

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def default_pages() -> Path:
    from benchmarks.corpus import CORPUS

    corpus = CORPUS / "pages"
    return corpus if corpus.is_dir() else ROOT / "samples"


def documents(folder: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".pdf", ".png", ".tiff"))
    return files[:limit] if limit else files


def count_pages(files: list[Path]) -> int:
    from app.media import sniff_media_type
    from workers.documents import page_sizes

    return sum(
        len(page_sizes(f, sniff_media_type(f.read_bytes()[:1024]) or "", 10_000)) for f in files
    )


def start_run(files: list[Path], mode: str, scratch: Path) -> subprocess.Popen[bytes]:
    """Starts `pagemill run` on `files` in a fresh embedded data folder under `scratch`, as a
    user would (results in scratch/out, state in scratch/data)."""
    docs = scratch / "docs"
    docs.mkdir()
    for f in files:
        (docs / f.name).symlink_to(f.resolve())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAGEMILL_")}
    env["PAGEMILL_DATA_DIR"] = str(scratch / "data")
    pagemill = str(Path(sys.executable).parent / "pagemill")
    argv = [pagemill, "run", str(docs), "-o", str(scratch / "out"), "--mode", mode]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run_pipeline(files: list[Path], mode: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="pagemill-bench-") as folder:
        scratch = Path(folder)
        started = time.perf_counter()
        process = start_run(files, mode, scratch)
        with PeakRss(process.pid) as rss:
            _, stderr = process.communicate()
        wall = time.perf_counter() - started
        if process.returncode not in (0, 1):
            raise RuntimeError(f"pagemill run failed: {stderr.decode()[-2000:]}")
        processing = _processing_seconds(scratch / "data" / "pagemill.db")
    return {
        "exit_code": process.returncode,
        "wall_seconds": round(wall, 2),
        "processing_seconds": round(processing, 2),
        "processes": rss.report(),
    }


def _processing_seconds(database: Path) -> float:
    """First job picked up by a worker to last job finished: the run without start-up."""
    import sqlite3
    from datetime import datetime

    with sqlite3.connect(database) as conn:
        first, last = conn.execute("SELECT min(started_at), max(finished_at) FROM jobs").fetchone()
    return (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()


def run_sequential(files: list[Path], mode: str) -> dict[str, object]:
    """The same engines, page by page in one process: render, layout, order, text layer or
    crop, recognize. No queue, no database, no storage."""
    from app.media import sniff_media_type
    from app.settings import Settings
    from workers.crops import crop_region
    from workers.documents import PDF, page_sizes, render_page
    from workers.engines.layout_rapid import RapidLayoutEngine
    from workers.engines.recognize_rapidocr import RapidOcrRecognizer
    from workers.engines.types import RecognitionRequest, RecognitionTask
    from workers.labels import routing_table
    from workers.reading_order import arrange_page
    from workers.textlayer import read_region_texts

    settings = Settings()
    layout = RapidLayoutEngine.from_settings(settings)
    recognizer = RapidOcrRecognizer()
    routes = routing_table()
    started = time.perf_counter()
    pages = 0
    for path in files:
        media = sniff_media_type(path.read_bytes()[:1024]) or ""
        for number in range(1, len(page_sizes(path, media, 10_000)) + 1):
            page = render_page(path, media, number, settings.render_dpi, settings.render_max_pixels)
            height, width = page.image.shape[:2]
            regions = arrange_page(layout.detect(page.image), width, height, first_page=number == 1)
            trusted: set[int] = set()
            if mode == "auto" and media == PDF:
                layer = read_region_texts(path, number - 1, page.scale, [r.bbox for r in regions])
                trusted = {i for i, r in enumerate(layer.regions) if r.trusted}
            requests = [
                RecognitionRequest(
                    str(i), crop_region(page.image, r.bbox, settings.crop_margin), routes[r.label]
                )
                for i, r in enumerate(regions)
                if routes[r.label]
                in (RecognitionTask.TEXT, RecognitionTask.FORMULA, RecognitionTask.TABLE)
                and i not in trusted
            ]
            recognizer.recognize(requests)
            pages += 1
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "pages": pages,
        "peak_rss_mib": self_peak_mib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=Path, default=default_pages())
    parser.add_argument("--mode", choices=("ocr", "auto"), default="ocr")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    files = documents(args.pages, args.limit)
    total = count_pages(files)
    print(f"{total} pages from {args.pages} ({len(files)} files), mode {args.mode}")

    pipeline = run_pipeline(files, args.mode)
    sequential = run_sequential(files, args.mode)
    result = {
        "pages": total,
        "mode": args.mode,
        "cores": os.cpu_count(),
        "pipeline": pipeline,
        "sequential": sequential,
        "pipeline_pages_per_second_wall": round(total / pipeline["wall_seconds"], 3),
        "pipeline_pages_per_second_processing": round(total / pipeline["processing_seconds"], 3),
        "sequential_pages_per_second": round(total / sequential["seconds"], 3),
    }
    result["ratio_processing_vs_sequential"] = round(
        result["pipeline_pages_per_second_processing"] / result["sequential_pages_per_second"], 3
    )
    result["ratio_wall_vs_sequential"] = round(
        result["pipeline_pages_per_second_wall"] / result["sequential_pages_per_second"], 3
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"pipeline-{args.mode}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"pagemill run : {result['pipeline_pages_per_second_wall']} pages/s wall "
        f"({pipeline['wall_seconds']} s incl. worker start), "
        f"{result['pipeline_pages_per_second_processing']} pages/s processing"
    )
    print(
        f"sequential   : {result['sequential_pages_per_second']} pages/s "
        f"({sequential['seconds']} s)"
    )
    print(
        f"ratio        : {result['ratio_processing_vs_sequential']} (processing), "
        f"{result['ratio_wall_vs_sequential']} (wall)"
    )
    print(
        "peak RSS     : "
        + ", ".join(
            f"{p['command']} {p['peak_rss_mib']} MiB"
            for p in pipeline["processes"]  # type: ignore[union-attr]
        )
        + f"; sequential loop {sequential['peak_rss_mib']} MiB"
    )
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
