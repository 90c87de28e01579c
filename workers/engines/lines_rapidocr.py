"""Text-line detection over a whole page with rapidocr's bundled PP-OCR detection model.

Run once per page in the page task: its lines tell which text no layout region covers (so
it is not lost), and they go with each region's crop so a line recognizer (rapidocr) reads
them directly instead of detecting lines again in every crop.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from workers.lines import TextLine


class RapidOcrLineDetector:
    name = "rapidocr-det"

    def __init__(self, threads: int = 0, max_side: int = 1280) -> None:
        from importlib.metadata import version

        from rapidocr import RapidOCR

        self.version = f"rapidocr-{version('rapidocr')}/PP-OCRv6-small-det@{max_side}"
        # Its own instance: rapidocr's per-call flags stick to later calls.
        self._ocr: Any = RapidOCR(
            params={
                "Global.log_level": "error",  # a page without text is no warning
                "Global.use_cls": False,
                "Global.use_rec": False,
                # The detector scales the page once, to `max_side`: no resize before it.
                "Global.max_side_len": 1_000_000,
                "Det.limit_type": "max",
                "Det.limit_side_len": max_side,
                "EngineConfig.onnxruntime.intra_op_num_threads": threads or -1,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1 if threads else -1,
            }
        )
        self._lock = threading.Lock()
        self._closed = False

    def detect(self, image: np.ndarray) -> list[TextLine]:
        """Text lines of one BGR page image, in its pixels."""
        with self._lock:
            output = self._ocr(image, use_det=True, use_cls=False, use_rec=False)
        boxes = getattr(output, "boxes", None)
        if boxes is None or len(boxes) == 0:
            return []
        scores = list(getattr(output, "scores", None) or [1.0] * len(boxes))
        return [
            TextLine(
                quad=tuple((float(x), float(y)) for x, y in np.asarray(box)[:4]),
                score=float(score),
            )
            for box, score in zip(boxes, scores, strict=False)
        ]

    def warmup(self) -> None:
        image = np.full((64, 200, 3), 255, dtype=np.uint8)
        image[24:40, 12:188] = 0
        self.detect(image)

    def healthy(self) -> bool:
        return not self._closed

    def close(self) -> None:
        self._closed = True
