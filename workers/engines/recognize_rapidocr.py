"""Recognizer `rapidocr`: the PP-OCR det+rec ONNX models bundled in rapidocr, on the CPU.

The offline default. It reads every task as text (tables come out as lines, formulas as
their characters); the GLM-OCR engines do the real formula and table work.

When a request carries the page's text lines (found once per page by the page task), they
are cut from the crop and recognized directly, every line of every request in one call;
only a crop without lines goes through rapidocr's own detection.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from workers.engines.types import RecognitionRequest, RecognitionResult, RecognitionTask
from workers.lines import Box, order_lines

# Lines per forward pass: measured on one thread, 1 is as fast as 2 or 4 and 30-40 % faster
# than rapidocr's default 6 (a batch is padded to its widest line).
REC_BATCH = 1
# Each given line is cut this much taller than its detected box (about the centre line). The
# model scales every line to 48 px high, so its width, and the time to read it, falls by as
# much: 1.3 reads 20-25 % faster than the detected box at the same accuracy.
LINE_PAD = 1.3


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
                "Rec.rec_batch_num": REC_BATCH,
                "EngineConfig.onnxruntime.intra_op_num_threads": threads or -1,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1 if threads else -1,
            }
        )
        self._text_score = float(self._ocr.cfg.Global.text_score)
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
        with_lines = [r for r in requests if r.lines]
        done = {r.key: r for r in self._lines(with_lines)} if with_lines else {}
        return [done.get(r.key) or self._one(r) for r in requests]

    def _lines(self, requests: Sequence[RecognitionRequest]) -> list[RecognitionResult]:
        """Recognizes the given lines of every request in one call (REC_BATCH at a time)."""
        from rapidocr.utils.process_img import get_rotate_crop_image

        owners: list[int] = []
        crops: list[np.ndarray] = []
        boxes: list[Box] = []
        for n, request in enumerate(requests):
            for quad in request.lines or []:
                points = np.array(quad, dtype=np.float32)
                grown = taller(points, LINE_PAD, request.image)
                crop = get_rotate_crop_image(request.image, grown)
                if crop.shape[0] < 2 or crop.shape[1] < 2:
                    continue
                owners.append(n)
                crops.append(crop)
                xs, ys = points[:, 0], points[:, 1]
                boxes.append((float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())))
        try:
            with self._lock:
                output = self._rec(crops)
        except Exception as exc:  # one bad page must not take the others' results
            return [
                RecognitionResult(key=r.key, content="", ok=False, error=str(exc)) for r in requests
            ]
        texts, scores = output
        per: list[list[tuple[Box, str]]] = [[] for _ in requests]
        for owner, box, text, score in zip(owners, boxes, texts, scores, strict=True):
            if text.strip() and score >= self._text_score:
                per[owner].append((box, text))
        return [
            RecognitionResult(
                key=request.key,
                content=join_lines(
                    [b for b, _ in found],
                    [t for _, t in found],
                    columns=request.task == RecognitionTask.TEXT,
                ),
                finish_reason="stop",
            )
            for request, found in zip(requests, per, strict=True)
        ]

    def _rec(self, crops: list[np.ndarray]) -> tuple[list[str], list[float]]:
        if not crops:
            return [], []
        output = self._ocr.recognize_txt(crops)
        return [str(t) for t in output.txts or ()], [float(s) for s in output.scores]

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
        found = [
            (float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 0].max()), float(b[:, 1].max()))
            for b in np.asarray(boxes)
        ]
        content = join_lines(found, list(texts), columns=request.task == RecognitionTask.TEXT)
        return RecognitionResult(key=request.key, content=content, finish_reason="stop")

    def close(self) -> None:
        self._closed = True


def taller(quad: np.ndarray, factor: float, image: np.ndarray) -> np.ndarray:
    """The quad (top-left, top-right, bottom-right, bottom-left) stretched across its line
    by `factor` about its centre line, kept inside the image."""
    across = (quad[3] + quad[2] - quad[0] - quad[1]) / 2  # top edge to bottom edge
    along = (quad[1] + quad[2] - quad[0] - quad[3]) / 2
    if np.linalg.norm(across) > np.linalg.norm(along):  # a vertical line: across is x
        across, grow = along, np.array([-1, 1, 1, -1], dtype=np.float32)
    else:
        grow = np.array([-1, -1, 1, 1], dtype=np.float32)
    out = quad + grow[:, None] * across[None, :] * (factor - 1) / 2
    height, width = image.shape[:2]
    out[:, 0] = np.clip(out[:, 0], 0, width - 1)
    out[:, 1] = np.clip(out[:, 1], 0, height - 1)
    return np.asarray(out, dtype=np.float32)


def join_lines(boxes: Sequence[Box], texts: Sequence[Any], *, columns: bool = False) -> str:
    """Detected text boxes as text: boxes on one row joined by a space, left to right, rows
    top to bottom, one per line; text columns one after another with `columns` (see
    workers.lines.order_lines)."""
    rows = order_lines(boxes, columns=columns)
    return "\n".join(" ".join(str(texts[i]) for i in row) for row in rows)
