"""Tesseract baseline: OCR a rendered page with the `tesseract` CLI, the reference users know.

Install on Debian: apt-get install -y tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim
tesseract-ocr-chi-tra tesseract-ocr-jpn. Run `python -m benchmarks.tesseract` to score the
corpus pages (CER and bag-of-words F1 against truth/*.txt), each in its manifest language.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.corpus import CORPUS


class TesseractUnavailable(RuntimeError):
    """The tesseract binary (or a language pack) is not installed."""


def tesseract_path() -> str | None:
    return shutil.which("tesseract")


def tesseract_version() -> str | None:
    """First line of `tesseract --version`, or None when it is not installed."""
    exe = tesseract_path()
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    lines = (out.stdout or out.stderr).splitlines()
    return lines[0].strip() if lines else None


def tesseract_languages() -> set[str]:
    exe = tesseract_path()
    if exe is None:
        return set()
    out = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, check=False)
    return {line.strip() for line in out.stdout.splitlines()[1:] if line.strip()}


def _png_bytes(image: Any) -> bytes:
    from PIL import Image

    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    if isinstance(image, np.ndarray):
        rgb = image[..., ::-1] if image.ndim == 3 else image  # BGR → RGB
        image = Image.fromarray(np.ascontiguousarray(rgb))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def ocr_image(
    image: Any,
    lang: str = "eng",
    *,
    dpi: int = 200,
    psm: int = 3,
    timeout: float = 300.0,
    threads: int | None = None,
) -> str:
    """Text of one page image (BGR array, PIL image or image file) via the tesseract CLI.

    `lang` is tesseract's language spec, e.g. "eng", "chi_sim+eng", "jpn+eng". `psm` 3 is
    tesseract's default fully automatic page segmentation. The image goes through stdin.
    `threads` caps tesseract's OpenMP threads (OMP_THREAD_LIMIT); None leaves its default.
    """
    exe = tesseract_path()
    if exe is None:
        raise TesseractUnavailable("tesseract is not installed (apt-get install tesseract-ocr)")
    missing = set(lang.split("+")) - tesseract_languages()
    if missing:
        raise TesseractUnavailable(f"tesseract language data missing: {sorted(missing)}")
    cmd = [exe, "stdin", "stdout", "-l", lang, "--psm", str(psm), "--dpi", str(dpi)]
    env = None if threads is None else {**os.environ, "OMP_THREAD_LIMIT": str(threads)}
    out = subprocess.run(
        cmd, input=_png_bytes(image), capture_output=True, timeout=timeout, check=False, env=env
    )
    if out.returncode != 0:
        raise RuntimeError(f"tesseract failed ({out.returncode}): {out.stderr.decode()[-500:]}")
    return out.stdout.decode("utf-8", errors="replace")


def render_pdf_page(pdf: str | Path, page_index: int = 0, dpi: int = 200) -> np.ndarray:
    """A PDF page rendered to a BGR array, as the pipeline renders it."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    try:
        bitmap = doc[page_index].render(scale=dpi / 72)
        return bitmap.to_numpy().copy()
    finally:
        doc.close()


def run_corpus(corpus: Path = CORPUS, dpi: int = 200, jobs: int = 1) -> list[dict[str, Any]]:
    """Tesseract over every corpus page (render + OCR), scored against its truth.

    With `jobs` > 1, that many pages are read at once, each tesseract on one thread: the
    fastest way to run it over many pages on that many cores (as ocrmypdf --jobs does)."""
    manifest = json.loads((corpus / "manifest.json").read_text())
    if jobs <= 1:
        return [_ocr_entry(corpus, entry, dpi, None) for entry in manifest["entries"]]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda e: _ocr_entry(corpus, e, dpi, 1), manifest["entries"]))


def _ocr_entry(
    corpus: Path, entry: dict[str, Any], dpi: int, threads: int | None
) -> dict[str, Any]:
    from benchmarks.accuracy_metrics import bag_of_words, cer, wer

    start = time.perf_counter()
    image = render_pdf_page(corpus / entry["pdf"], 0, dpi)
    text = ocr_image(image, entry.get("tesseract_lang", "eng"), dpi=dpi, threads=threads)
    seconds = time.perf_counter() - start
    truth = (corpus / entry["truth"]).read_text()
    return {
        "id": entry["id"],
        "lang": entry["tesseract_lang"],
        "category": entry["category"],
        "cer": round(cer(truth, text), 4),
        "wer": round(wer(truth, text), 4),
        "bow_f1": round(bag_of_words(truth, text).f1, 4),
        "seconds": round(seconds, 2),
        "text": text,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--dpi", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=1, help="pages at once, one thread each")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tesseract.json"))
    args = parser.parse_args(argv)
    if tesseract_path() is None:
        print("tesseract is not installed", file=sys.stderr)
        return 2
    rows = run_corpus(args.corpus, args.dpi, args.jobs)
    for r in rows:
        r.pop("text")
    for r in rows:
        scores = f"CER {r['cer']:.3f}  BoW-F1 {r['bow_f1']:.3f}"
        print(f"{r['id']:40} {r['lang']:12} {scores}  {r['seconds']:.1f}s")
    n = len(rows)
    summary = {
        "engine": tesseract_version(),
        "dpi": args.dpi,
        "pages": n,
        "mean_cer": round(sum(r["cer"] for r in rows) / n, 4),
        "mean_bow_f1": round(sum(r["bow_f1"] for r in rows) / n, 4),
        "mean_seconds": round(sum(r["seconds"] for r in rows) / n, 2),
        "rows": rows,
    }
    print(
        f"mean CER {summary['mean_cer']:.3f}  mean BoW-F1 {summary['mean_bow_f1']:.3f}  "
        f"{summary['mean_seconds']:.1f}s/page"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
