"""Layout with PP-DocLayout-V3 through PaddleX: the production layout engine.

PaddleX is an optional extra (`pip install 'pagemill[paddlex]'`) and its weights are never
downloaded here: the operator exports or downloads the inference model once and points
`PAGEMILL_PADDLEX_MODEL_DIR` at it. The folder is checked before PaddleX is imported, so a
worker without weights fails at start-up with a message that says what to do, not at the
first page with a network error.

PaddleX's result for one image is a dict whose `boxes` is a list of
`{cls_id, label, score, coordinate: [x0, y0, x1, y1], polygon_points?, order?}` in pixels of
the input image; `order` is the predicted reading order, `None` for regions outside the text
flow. `detections_from_paddlex` reads that into the Detections the transformers engine
produces too, and `layout_detections.regions_from_detections` maps both onto LayoutRegion.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.storage import sha256_file
from workers.engines.layout_detections import (
    Detection,
    check_merge_mode,
    class_thresholds,
    regions_from_detections,
)
from workers.engines.types import LayoutRegion
from workers.labels import LABELS

if TYPE_CHECKING:
    from app.settings import Settings

# The exported inference model: a config plus the graph in either of Paddle's two formats.
REQUIRED_FILES = ("inference.yml", "inference.pdiparams")
GRAPH_FILES = ("inference.json", "inference.pdmodel")  # PIR (Paddle 3) or legacy program

_HOW_TO = (
    "Provide PP-DocLayout-V3 weights: download or export the PaddleX inference model "
    "(e.g. the 'PaddlePaddle/PP-DocLayoutV3' model, or `paddlex --export` of a trained one) "
    "on a machine with access, copy the folder to this one, and set "
    "PAGEMILL_PADDLEX_MODEL_DIR to it. The folder must contain inference.yml, "
    "inference.pdiparams and inference.json (or inference.pdmodel). Or use the offline "
    "default: PAGEMILL_LAYOUT_ENGINE=rapid."
)


class LayoutModelMissing(RuntimeError):
    """The PaddleX layout model folder is unset, missing or incomplete."""


class PaddleXUnavailable(RuntimeError):
    """PaddleX itself is not installed."""


def check_model_dir(model_dir: Path | str | None, model_name: str | None = None) -> Path:
    """The model folder, validated; raises LayoutModelMissing saying what is wrong and how
    to fix it. With `model_name`, a different `model_name` in inference.yml is an error too,
    so a folder holding another model is not loaded by mistake."""
    if model_dir is None or str(model_dir) == "":
        raise LayoutModelMissing(f"PAGEMILL_PADDLEX_MODEL_DIR is not set. {_HOW_TO}")
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise LayoutModelMissing(f"PaddleX model folder {path} does not exist. {_HOW_TO}")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if not any((path / name).is_file() for name in GRAPH_FILES):
        missing.append(" or ".join(GRAPH_FILES))
    if missing:
        raise LayoutModelMissing(
            f"PaddleX model folder {path} is incomplete: missing {', '.join(missing)}. {_HOW_TO}"
        )
    if model_name:
        found = _yaml_model_name(path / "inference.yml")
        if found and found != model_name:
            raise LayoutModelMissing(
                f"PaddleX model folder {path} holds {found!r}, not {model_name!r} "
                f"(PAGEMILL_PADDLEX_MODEL_NAME). {_HOW_TO}"
            )
    return path


def _yaml_model_name(path: Path) -> str | None:
    """`model_name` from an inference.yml, read without a YAML parser (first match)."""
    match = re.search(
        r"^\s*model_name:\s*['\"]?([^'\"\s#]+)", path.read_text(errors="replace"), re.M
    )
    return match.group(1) if match else None


def paddle_device(device: str) -> str:
    """`cuda:N` (the setting's torch spelling) → Paddle's `gpu:N`; anything else as is."""
    return "gpu" + device[4:] if device.startswith("cuda") else device


def _to_float(value: Any) -> float:
    return float(np.asarray(value).item()) if not isinstance(value, (int, float)) else float(value)


def detections_from_paddlex(result: Mapping[str, Any]) -> list[Detection]:
    """PaddleX's layout result for one image → Detections, in PaddleX's order. Accepts the
    result dict itself or its JSON form (`{"res": {...}}`); a rotated quad becomes its
    bounding box."""
    if "boxes" not in result and isinstance(result.get("res"), Mapping):
        result = result["res"]
    detections: list[Detection] = []
    for box in result.get("boxes") or []:
        coords = [_to_float(v) for v in np.asarray(box["coordinate"], dtype=float).reshape(-1)]
        if len(coords) == 4:
            x0, y0, x1, y1 = coords
        else:  # a rotated quad: its bounding box
            xs, ys = coords[0::2], coords[1::2]
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        label = box.get("label")
        cls_id = box.get("cls_id")
        order = box.get("order")
        detections.append(
            Detection(
                cls_id=None if cls_id is None else int(cls_id),
                label=None if label is None else str(label),
                score=_to_float(box.get("score", 0.0)),
                box=(x0, y0, x1, y1),
                order=None if order is None else int(order),
                polygon=box.get("polygon_points"),
            )
        )
    return detections


def regions_from_paddlex(
    result: Mapping[str, Any], label_list: Sequence[str] = LABELS
) -> list[LayoutRegion]:
    """PaddleX's layout result for one image → LayoutRegions (see regions_from_detections)."""
    return regions_from_detections(detections_from_paddlex(result), label_list)


class PaddleXLayoutEngine:
    """LayoutEngine over PP-DocLayout-V3 in PaddleX. The model folder is validated when the
    engine is built; PaddleX is imported and the model loaded on first use (or `start()`)."""

    name = "paddlex"

    def __init__(
        self,
        model_dir: Path | str | None,
        model_name: str = "PP-DocLayoutV3",
        device: str = "cpu",
        batch_size: int = 1,
        threshold: float | Mapping[str, float] = 0.3,
        layout_nms: bool = True,
        merge_mode: str | Mapping[str, str] = "large",
        layout_shape_mode: str = "auto",
        model_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.model_dir = check_model_dir(model_dir, model_name)
        if model_factory is None and importlib.util.find_spec("paddlex") is None:
            raise PaddleXUnavailable(
                "PAGEMILL_LAYOUT_ENGINE=paddlex needs PaddleX: pip install 'pagemill[paddlex]' "
                "(and paddlepaddle for your device), or use PAGEMILL_LAYOUT_ENGINE=rapid."
            )
        self.model_name = model_name
        self.device = device
        self.batch_size = batch_size
        self.threshold = threshold
        self.layout_nms = layout_nms
        self.merge_mode = merge_mode
        self.layout_shape_mode = layout_shape_mode
        self._factory = model_factory
        self._label_list: Sequence[str] = LABELS
        class_thresholds(threshold, self._label_list)  # fail now on unknown labels
        check_merge_mode(merge_mode, self._label_list)
        try:
            pkg = importlib.metadata.version("paddlex")
        except importlib.metadata.PackageNotFoundError:
            pkg = "none"
        digest = sha256_file(self.model_dir / "inference.pdiparams")[:12]
        self.version = f"paddlex-{pkg}/{model_name}@{digest}"
        self._model: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, model_factory: Callable[..., Any] | None = None
    ) -> PaddleXLayoutEngine:
        return cls(
            model_dir=settings.paddlex_model_dir,
            model_name=settings.paddlex_model_name,
            device=paddle_device(settings.layout_device),
            batch_size=settings.layout_batch_size,
            threshold=settings.layout_threshold,
            layout_nms=settings.layout_nms,
            merge_mode=settings.layout_merge_mode,
            layout_shape_mode=settings.paddlex_layout_shape_mode,
            model_factory=model_factory,
        )

    def start(self) -> None:
        """Load the model now (worker start-up) rather than on the first page."""
        self._load()

    def warmup(self) -> None:
        self._load()

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        with self._lock:
            self._model = None

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                factory = self._factory
                if factory is None:
                    from paddlex import create_model  # heavy: paddle

                    factory = create_model
                model = factory(
                    model_name=self.model_name, model_dir=str(self.model_dir), device=self.device
                )
                labels = (getattr(model, "config", None) or {}).get("label_list")
                if labels:
                    self._label_list = tuple(labels)
                self._model = model
            return self._model

    def _merge_arg(self) -> str | dict[int, str]:
        if isinstance(self.merge_mode, str):
            return self.merge_mode
        return {self._label_list.index(k): v for k, v in self.merge_mode.items()}

    def detect(self, image: np.ndarray) -> list[LayoutRegion]:
        """Regions of one BGR page image with the model's labels, polygons and order."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a BGR image H x W x 3, got shape {image.shape}")
        model = self._load()
        results = model.predict(
            np.ascontiguousarray(image),
            batch_size=self.batch_size,
            threshold=class_thresholds(self.threshold, self._label_list),
            layout_nms=self.layout_nms,
            layout_merge_bboxes_mode=self._merge_arg(),
            layout_shape_mode=self.layout_shape_mode,
        )
        regions: list[LayoutRegion] = []
        for result in results:
            regions.extend(regions_from_paddlex(result, self._label_list))
        return regions
