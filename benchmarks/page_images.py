"""What keeping a page image for the web page costs: milliseconds to scale and encode each
corpus page (rendered at 200 dpi, as the page task does) and the bytes stored, at the
default longest side. Writes benchmarks/results/page-images.json.

    python -m benchmarks.page_images [--dpi 200] [--max-side 1200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from app.settings import Settings
from benchmarks.corpus import CORPUS
from benchmarks.layout_speed import render_corpus
from workers.previews import page_image

OUT = Path(__file__).resolve().parent / "results" / "page-images.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dpi", type=int, default=200)
    parser.add_argument("--max-side", type=int, default=Settings().page_image_max_side)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    pages = render_corpus(CORPUS, args.dpi)
    rows: list[dict[str, Any]] = []
    for page_id, image in pages:
        runs, size = [], 0
        for _ in range(args.repeat):
            start = time.perf_counter()
            size = len(page_image(image, args.max_side))
            runs.append((time.perf_counter() - start) * 1000)
        height, width = image.shape[:2]
        rows.append(
            {"page": page_id, "rendered": [width, height], "ms": round(min(runs), 1), "bytes": size}
        )
        print(f"{page_id:50s} {width}x{height}  {min(runs):6.1f} ms  {size / 1024:6.1f} KiB")
    result = {
        "dpi": args.dpi,
        "max_side": args.max_side,
        "pages": len(rows),
        "median_ms": round(statistics.median(r["ms"] for r in rows), 1),
        "max_ms": max(r["ms"] for r in rows),
        "median_kib": round(statistics.median(r["bytes"] for r in rows) / 1024, 1),
        "max_kib": round(max(r["bytes"] for r in rows) / 1024, 1),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "per_page": rows,
    }
    print(
        f"{len(rows)} pages: {result['median_ms']} ms median ({result['max_ms']} max), "
        f"{result['median_kib']} KiB median ({result['max_kib']} max)"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
