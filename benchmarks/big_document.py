"""Memory on a very long document: one N-page PDF (10,000 by default) through `pagemill run`
against a 10-page one, with the peak RSS of every process (the run, each worker's main
process and pool children), and how long prepare took to record the pages.

    .venv/bin/python -m benchmarks.big_document --pages 10000 [--baseline 10] [--dpi 72]
    .venv/bin/python -m benchmarks.big_document --pages 10000 --prepare-only

The PDF is written page by page (one short line each), so the generator holds only the
object offsets. `--mode text` with a low dpi keeps each page cheap: the point is what a
long document costs in memory, not OCR speed. `--prepare-only` stops the run once prepare
has recorded every page (the part that must not grow with the document: page sizes read
one at a time, page rows, one message per page). Writes benchmarks/results/big-document-N.json
(big-document-prepare.json with --prepare-only).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from benchmarks.procs import PeakRss

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def write_pdf(path: Path, pages: int, tag: str = "") -> int:
    """An N-page PDF written streaming: per page a content stream and a page object; the
    page tree's Kids list is written last. `tag` goes into every page's line (documents of
    different content). Returns the file size."""
    offsets: list[int] = []  # object number - 1 → byte offset
    first_page = 4  # 1 catalog, 2 pages, 3 font, then page/content pairs
    with path.open("wb") as f:
        f.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")

        def obj(body: bytes) -> None:
            offsets.append(f.tell())
            f.write(b"%d 0 obj\n" % len(offsets) + body + b"\nendobj\n")

        obj(b"<< /Type /Catalog /Pages 2 0 R >>")
        kids = b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in range(pages))
        obj(b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages)
        del kids
        obj(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
        for number in range(1, pages + 1):
            content = zlib.compress(
                b"BT /F1 14 Tf 72 720 Td (Page %d of %d: one short line of text%s.) Tj ET"
                % (number, pages, tag.encode())
            )
            obj(
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents %d 0 R "
                b"/Resources << /Font << /F1 3 0 R >> >> >>" % (len(offsets) + 2)
            )
            obj(
                b"<< /Filter /FlateDecode /Length %d >>\nstream\n" % len(content)
                + content
                + b"\nendstream"
            )
        xref = f.tell()
        f.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(offsets) + 1))
        for offset in offsets:
            f.write(b"%010d 00000 n \n" % offset)
        f.write(
            b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
            % (len(offsets) + 1, xref)
        )
        return f.tell()


def _poll(database: Path) -> tuple[int | None, int, str | None]:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("SELECT pages_total, pages_done, state FROM jobs").fetchone()
    except sqlite3.Error:
        return None, 0, None
    return (row[0], row[1], row[2]) if row else (None, 0, None)


def run(
    pages: int, dpi: int, prepare_only: bool, keep: Path | None, budget: float | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pagemill-big-", ignore_cleanup_errors=True) as folder:
        scratch = keep or Path(folder)
        scratch.mkdir(parents=True, exist_ok=True)
        pdf = scratch / f"big-{pages}.pdf"
        started = time.perf_counter()
        size = write_pdf(pdf, pages)
        generate_seconds = time.perf_counter() - started
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAGEMILL_")}
        env["PAGEMILL_DATA_DIR"] = str(scratch / "data")
        env["PYTHONPATH"] = str(ROOT)  # this checkout, wherever pagemill was installed from
        pagemill = str(Path(sys.executable).parent / "pagemill")
        argv = [pagemill, "run", str(pdf), "-o", str(scratch / "out"), "--mode", "text"]
        argv += ["--dpi", str(dpi)]
        started = time.perf_counter()
        process = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        database = scratch / "data" / "pagemill.db"
        prepared_at = None
        state: str | None = None
        with PeakRss(process.pid, interval=0.5) as rss:
            while process.poll() is None:
                total, done, state = _poll(database)
                if prepared_at is None and total is not None:
                    prepared_at = time.perf_counter() - started
                    print(f"  prepared {total} pages after {prepared_at:.1f} s", flush=True)
                    if prepare_only:
                        time.sleep(5)  # let the fan-out of page messages finish
                        break
                if budget is not None and time.perf_counter() - started > budget:
                    print(f"  stopped after the budget of {budget:.0f} s", flush=True)
                    break
                time.sleep(1.0)
            if process.poll() is None:
                process.terminate()  # pagemill run stops its workers on SIGTERM
            _, stderr = process.communicate(timeout=120)
        wall = time.perf_counter() - started
        total, done, state = _poll(database)
        rates = _rates(database)
        return {
            "pages": pages,
            "pdf_bytes": size,
            "generate_seconds": round(generate_seconds, 2),
            "prepare_only": prepare_only,
            "budget_seconds": budget,
            "seconds_to_prepared": round(prepared_at, 1) if prepared_at else None,
            "wall_seconds": round(wall, 1),
            "job_state": state,
            "pages_done": done,
            **rates,
            "exit_code": process.returncode,
            "stderr_tail": stderr.decode(errors="replace")[-600:] if state is None else None,
            "processes": rss.report(),
            "peak_rss_mib_max": max((p["peak_rss_mib"] for p in rss.report()), default=0),  # type: ignore[type-var]
        }


def _rates(database: Path) -> dict[str, Any]:
    """Pages per second between the first and the last finished page."""
    from datetime import datetime

    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
            first, last, n = conn.execute(
                "SELECT min(started_at), max(finished_at), count(finished_at) FROM pages"
            ).fetchone()
    except sqlite3.Error:
        return {}
    if not first or not last or n < 2:
        return {"pages_finished": n}
    seconds = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    return {"pages_finished": n, "pages_per_second": round(n / seconds, 2) if seconds else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=10, help="the short document")
    parser.add_argument("--dpi", type=int, default=72, help="render resolution (cheap)")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep the PDF and state here")
    parser.add_argument(
        "--budget-minutes", type=float, help="stop the big run after this long (partial numbers)"
    )
    args = parser.parse_args()

    results: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "cores": os.cpu_count(),
        "settings": {k: v for k, v in os.environ.items() if k.startswith("PAGEMILL_")},
    }
    for label, pages in (("baseline", args.baseline), ("big", args.pages)):
        print(f"{label}: {pages} pages", flush=True)
        keep = args.keep / label if args.keep else None
        budget = args.budget_minutes * 60 if args.budget_minutes and label == "big" else None
        results[label] = run(pages, args.dpi, args.prepare_only and label == "big", keep, budget)
        for proc in results[label]["processes"]:
            print(f"  {proc['peak_rss_mib']:>8} MiB  {proc['command']}")
        print(
            f"  state {results[label]['job_state']}, {results[label]['pages_done']} pages done, "
            f"{results[label].get('pages_per_second')} pages/s, "
            f"wall {results[label]['wall_seconds']} s",
            flush=True,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "big-document-prepare.json" if args.prepare_only else f"big-document-{args.pages}.json"
    (RESULTS / name).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS / name}")


if __name__ == "__main__":
    main()
