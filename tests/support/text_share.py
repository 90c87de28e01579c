"""How much of a real page's text (its text layer, the ground truth) lies in given regions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium

from workers.geometry import Box
from workers.textlayer import _read_chars, pixel_to_pdf_rect


def text_share_in(pdf: Path, boxes: Sequence[Box], scale: float) -> float:
    """Share of the first page's text-layer characters whose centre lies in one of the
    boxes (pixels of the page rendered at `scale`)."""
    doc = pdfium.PdfDocument(str(pdf))
    try:
        page = doc[0]
        chars = _read_chars(page.get_textpage())
        cx = (chars.boxes[:, 0] + chars.boxes[:, 2]) / 2
        cy = (chars.boxes[:, 1] + chars.boxes[:, 3]) / 2
        inside = np.zeros(len(chars.boxes), dtype=bool)
        for box in boxes:
            left, bottom, right, top = pixel_to_pdf_rect(page, scale, box)
            inside |= (cx >= left) & (cx <= right) & (cy >= bottom) & (cy <= top)
        return float((inside & chars.counted).sum() / max(1, chars.counted.sum()))
    finally:
        doc.close()
