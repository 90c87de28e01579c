"""Accuracy on real PDF pages: character and word error rates per page and overall, for
`pagemill run` in `ocr` mode (every region recognized), in `auto` mode (text layer where
trusted), and tesseract when it is installed — against each page's own text layer; and
pages per second of each, measured in the same run on the same pages (pagemill: wall time
of `pagemill run` including its workers' start; tesseract: one process per core).

    .venv/bin/python -m benchmarks.accuracy [--corpus DIR] [--modes ocr,auto] [--no-tesseract]

Writes benchmarks/results/accuracy.json. The corpus (../shared/corpus) has a manifest with
each page's language and category; its README explains the truth files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.accuracy_metrics import bag_of_words, cer, wer
from benchmarks.corpus import CORPUS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def markdown_text(markdown: str) -> str:
    """What a reader gets from the markdown, without its markup."""
    text = re.sub(r"<!--.*?-->", " ", markdown, flags=re.S)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", text)
    text = re.sub(r"^#{1,6}\s*", "", text, flags=re.M)
    text = re.sub(r"^\$\$\s*$", "", text, flags=re.M)
    return text


def run_mode(corpus: Path, entries: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """`pagemill run` over the corpus pages in a fresh embedded data folder."""
    from benchmarks.pipeline import start_run

    with tempfile.TemporaryDirectory(prefix=f"pagemill-accuracy-{mode}-") as folder:
        scratch = Path(folder)
        started = time.perf_counter()
        process = start_run([corpus / e["pdf"] for e in entries], mode, scratch)
        _, stderr = process.communicate()
        seconds = time.perf_counter() - started
        if process.returncode not in (0, 1):
            raise RuntimeError(f"pagemill run failed: {stderr.decode()[-2000:]}")
        texts: dict[str, Any] = {}
        for entry in entries:
            stem = Path(entry["pdf"]).stem
            md = scratch / "out" / f"{stem}.md"
            texts[entry["id"]] = markdown_text(md.read_text()) if md.exists() else ""
            document = scratch / "out" / f"{stem}.json"
            if document.exists():
                regions = json.loads(document.read_text())["pages"][0]["regions"]
                texts[entry["id"] + ":sources"] = sorted({r["source"] for r in regions})
    return {"seconds": round(seconds, 2), "texts": texts}


def score(truth: str, text: str) -> dict[str, float]:
    return {
        "cer": round(cer(truth, text), 4),
        "wer": round(wer(truth, text), 4),
        "bow_f1": round(bag_of_words(truth, text).f1, 4),
    }


def overall(rows: list[dict[str, Any]], truths: dict[str, str], key: str) -> dict[str, float]:
    """Mean per page, and micro (error rates weighted by each page's length)."""
    scored = [r for r in rows if key in r]
    if not scored:
        return {}
    chars = {r["id"]: max(1, len(truths[r["id"]])) for r in scored}
    total = sum(chars.values())
    return {
        "mean_cer": round(sum(r[key]["cer"] for r in scored) / len(scored), 4),
        "micro_cer": round(sum(r[key]["cer"] * chars[r["id"]] for r in scored) / total, 4),
        "mean_wer": round(sum(r[key]["wer"] for r in scored) / len(scored), 4),
        "mean_bow_f1": round(sum(r[key]["bow_f1"] for r in scored) / len(scored), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--modes", default="ocr,auto")
    parser.add_argument("--no-tesseract", action="store_true")
    args = parser.parse_args()
    manifest = json.loads((args.corpus / "manifest.json").read_text())
    entries = manifest["entries"]
    truths = {e["id"]: (args.corpus / e["truth"]).read_text(encoding="utf-8") for e in entries}
    rows: list[dict[str, Any]] = [
        {"id": e["id"], "lang": e["lang"], "category": e["category"]} for e in entries
    ]
    timing: dict[str, Any] = {}
    for mode in args.modes.split(","):
        result = run_mode(args.corpus, entries, mode)
        timing[mode] = {
            "seconds": result["seconds"],
            "pages_per_second": round(len(entries) / result["seconds"], 3),
        }
        for row in rows:
            row[mode] = score(truths[row["id"]], result["texts"][row["id"]])
            row[mode]["sources"] = result["texts"].get(row["id"] + ":sources", [])
    if not args.no_tesseract:
        from benchmarks.tesseract import run_corpus, tesseract_path

        if tesseract_path():
            # One tesseract per core, one thread each: its best pages/s on this machine, on
            # the same cores that `pagemill run` gets (one worker process per core).
            jobs = os.cpu_count() or 1
            started = time.perf_counter()
            by_id = {r["id"]: r for r in run_corpus(args.corpus, jobs=jobs)}
            seconds = time.perf_counter() - started
            timing["tesseract"] = {
                "seconds": round(seconds, 2),
                "pages_per_second": round(len(entries) / seconds, 3),
                "processes": jobs,
            }
            for row in rows:
                found = by_id[row["id"]]
                row["tesseract"] = {k: found[k] for k in ("cer", "wer", "bow_f1")}
        else:
            print(
                "tesseract is not installed: apt-get install -y tesseract-ocr tesseract-ocr-eng "
                "tesseract-ocr-chi-sim tesseract-ocr-chi-tra tesseract-ocr-jpn"
            )
    systems = [m for m in (*args.modes.split(","), "tesseract") if any(m in r for r in rows)]
    summary = {system: overall(rows, truths, system) for system in systems}

    header = f"{'page':36} {'lang':4} " + " ".join(f"{s + ' cer/wer/bow':>24}" for s in systems)
    print(header)
    for row in rows:
        cells = " ".join(
            f"{row[s]['cer']:>8.3f}{row[s]['wer']:>8.3f}{row[s]['bow_f1']:>8.3f}"
            if s in row
            else f"{'-':>24}"
            for s in systems
        )
        print(f"{row['id'][:36]:36} {row['lang']:4} {cells}")
    for system, numbers in summary.items():
        print(f"overall {system:10}: " + ", ".join(f"{k} {v}" for k, v in numbers.items()))
    for mode, numbers in timing.items():
        print(f"time    {mode:10}: " + ", ".join(f"{k} {v}" for k, v in numbers.items()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "accuracy.json"
    out.write_text(
        json.dumps(
            {"pages": rows, "overall": summary, "timing": timing}, indent=1, ensure_ascii=False
        )
        + "\n"
    )
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
