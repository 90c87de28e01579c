"""Writes the sample documents in samples/ (generated here, not copied from anywhere).

.venv/bin/python scripts/make_samples.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import documents  # noqa: E402

SECOND_PAGE = (
    "Measurements",
    (
        "Each gauge reports its level every fifteen minutes to the central office.",
        "Readings older than one hour are marked as stale on the public map.",
        "The spring survey found two gauges that needed new batteries.",
    ),
)


def main() -> None:
    out = ROOT / "samples"
    out.mkdir(exist_ok=True)
    pages = [(documents.SAMPLE_TITLE, documents.SAMPLE_PARAGRAPHS), SECOND_PAGE]
    documents.make_scanned_pdf(out / "scanned-report.pdf", pages)
    documents.make_born_digital_pdf(out / "digital-report.pdf", pages)
    documents.make_image(out / "scanned-note.png", "PNG", None, SECOND_PAGE[1])
    for path in sorted(out.iterdir()):
        print(path.relative_to(ROOT), path.stat().st_size)


if __name__ == "__main__":
    main()
