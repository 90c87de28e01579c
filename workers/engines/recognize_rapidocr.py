"""Recognizer `rapidocr`: the PP-OCR det+rec ONNX models bundled in rapidocr, on the CPU.

The offline default. It reads every task as text (tables come out as lines, formulas as
their characters); the GLM-OCR engines do the real formula and table work.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from workers.engines.types import RecognitionRequest, RecognitionResult, RecognitionTask


class RapidOcrRecognizer:
    name = "rapidocr"

    def __init__(self, threads: int = 0) -> None:
        from importlib.metadata import version

        from rapidocr import RapidOCR

        self.version = f"rapidocr-{version('rapidocr')}/PP-OCRv6-small"
        self._ocr = RapidOCR(
            params={
                "Global.log_level": "warning",
                "Global.use_cls": False,  # garbles rendered lines when detection is scaled
                "Det.limit_type": "max",
                "Det.limit_side_len": 1280,
                "EngineConfig.onnxruntime.intra_op_num_threads": threads or -1,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1 if threads else -1,
            }
        )
        # One RapidOCR object is not safe to call from two threads at once.
        self._lock = threading.Lock()
        self._closed = False

    def warmup(self) -> RecognitionResult:
        """Runs detection and recognition once on a small drawn line: loads both models."""
        image = np.full((48, 160, 3), 255, dtype=np.uint8)
        image[18:30, 12:148] = 0
        result = self._one(RecognitionRequest("warmup", image, RecognitionTask.TEXT))
        if not result.ok:
            raise RuntimeError(f"rapidocr cannot recognize: {result.error}")
        return result

    def healthy(self) -> bool:
        return not self._closed

    def recognize(self, requests: Sequence[RecognitionRequest]) -> list[RecognitionResult]:
        return [self._one(request) for request in requests]

    def _one(self, request: RecognitionRequest) -> RecognitionResult:
        try:
            with self._lock:
                # Per-call flags stick to later calls in rapidocr: pass all three each time.
                output = self._ocr(request.image, use_det=True, use_cls=False, use_rec=True)
        except Exception as exc:  # one bad crop must not fail the page
            return RecognitionResult(key=request.key, content="", ok=False, error=str(exc))
        boxes = getattr(output, "boxes", None)
        texts = getattr(output, "txts", None)
        if boxes is None or texts is None:
            return RecognitionResult(key=request.key, content="", finish_reason="stop")
        return RecognitionResult(
            key=request.key,
            content=join_lines(np.asarray(boxes), list(texts)),
            finish_reason="stop",
        )

    def close(self) -> None:
        self._closed = True


def join_lines(boxes: np.ndarray, texts: list[Any]) -> str:
    """Joins detected text boxes into lines: boxes whose vertical centres fall within half a
    line height of each other form a line, read left to right."""
    if len(texts) == 0:
        return ""
    items = []
    for box, text in zip(boxes, texts, strict=False):
        ys = box[:, 1]
        xs = box[:, 0]
        items.append((float(ys.min()), float(ys.max()), float(xs.min()), str(text)))
    items.sort(key=lambda item: ((item[0] + item[1]) / 2, item[2]))
    lines: list[list[tuple[float, float, float, str]]] = []
    for item in items:
        centre = (item[0] + item[1]) / 2
        if lines:
            last = lines[-1]
            top = min(i[0] for i in last)
            bottom = max(i[1] for i in last)
            height = bottom - top
            if abs(centre - (top + bottom) / 2) < height / 2:
                last.append(item)
                continue
        lines.append([item])
    return "\n".join(" ".join(i[3] for i in sorted(line, key=lambda i: i[2])) for line in lines)
