"""Layout with PP-DocLayout-V3 through transformers, batched across pages.

The model (`PPDocLayoutV3ForObjectDetection`, the `PaddlePaddle/PP-DocLayoutV3_safetensors`
weights, or any folder saved the same way) runs in this process on `cpu` or `cuda:N`, on the
same torch as vLLM. One engine per process; Celery's threads pool calls `detect()` from
several threads at once:

- a caller thread converts and resizes its page (the image processor), puts it on a queue
  and waits on a future;
- one engine thread takes whatever pages are waiting (after the first, it waits up to
  `batch_wait_ms` for more, up to `batch_size`) and runs them as one forward pass;
- the caller decodes its own page's outputs: per-label thresholds, NMS, nested-box merging,
  reading order, polygons from the masks (`layout_detections`), then the same mapping onto
  LayoutRegion as the `paddlex` engine.

Rendering, crops and storage stay in the caller threads; the engine thread only moves
tensors. Weights come from a local folder or a hub id; nothing is downloaded for a folder.
"""

from __future__ import annotations

import collections
import importlib.metadata
import json
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.storage import sha256_file
from workers.engines.base import EngineDead
from workers.engines.layout_detections import (
    Detection,
    check_merge_mode,
    class_thresholds,
    postprocess,
    regions_from_detections,
)
from workers.engines.types import LayoutRegion
from workers.labels import LABELS

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")
_WEIGHTS = "model.safetensors"
_REQUIRED = ("config.json", "preprocessor_config.json", _WEIGHTS)


class LayoutModelMissing(RuntimeError):
    """The model folder (or hub id) cannot be found or is incomplete."""


@dataclass(frozen=True, slots=True)
class _Outputs:
    """One page's share of a forward pass, on the CPU as float32 numpy arrays."""

    logits: np.ndarray  # queries x classes
    boxes: np.ndarray  # queries x 4: cx, cy, w, h in 0..1
    order_logits: np.ndarray  # queries x queries
    masks: np.ndarray  # queries x h/4 x w/4 (mask logits)


@dataclass(slots=True)
class _Page:
    pixel_values: Any  # 1 x 3 x H x W torch tensor
    future: Future[_Outputs] = field(default_factory=Future)


def resolve_model(model: str | Path) -> Path:
    """A local folder as is; otherwise a hub id through the hub's cache (which downloads it
    once where the hub is reachable). Raises LayoutModelMissing saying what is wrong."""
    path = Path(model).expanduser()
    if not path.is_dir():
        if path.is_absolute() or str(model).startswith((".", "~")) or str(model).count("/") != 1:
            raise LayoutModelMissing(f"layout model folder {path} does not exist")
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(str(model), allow_patterns=list(_REQUIRED)))
        except Exception as exc:
            raise LayoutModelMissing(
                f"layout model {model!r} is no folder here and the hub cannot provide it "
                f"({type(exc).__name__}). Download PaddlePaddle/PP-DocLayoutV3_safetensors on "
                "a machine with access and set PAGEMILL_LAYOUT_MODEL to the folder."
            ) from exc
    missing = [name for name in _REQUIRED if not (path / name).is_file()]
    if missing:
        raise LayoutModelMissing(f"layout model folder {path} lacks {', '.join(missing)}")
    return path


def check_device(device: str) -> str:
    if device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        return device
    raise ValueError(f"layout_device must be cpu or cuda:N, not {device!r}")


class TransformersLayoutEngine:
    """LayoutEngine over PP-DocLayout-V3 in transformers, one engine thread batching pages."""

    name = "transformers"

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 8,
        batch_wait_ms: float = 5.0,
        threshold: float | Mapping[str, float] = 0.3,
        layout_nms: bool = True,
        merge_mode: str | Mapping[str, str] = "large",
        threads: int = 0,
        gpu_memory_fraction: float | None = None,
    ) -> None:
        self.folder = resolve_model(model)
        self.device = check_device(device)
        if dtype not in DTYPES:
            raise ValueError(f"layout_dtype must be one of {DTYPES}, not {dtype!r}")
        self.dtype = dtype
        self.batch_size = max(1, batch_size)
        self.batch_wait = max(0.0, batch_wait_ms) / 1000
        config = json.loads((self.folder / "config.json").read_text())
        id2label = config.get("id2label") or {}
        self.label_list: tuple[str, ...] = (
            tuple(
                str(id2label.get(str(i), id2label.get(i, f"class_{i}")))
                for i in range(len(id2label))
            )
            or LABELS
        )
        self.thresholds = class_thresholds(threshold, self.label_list)
        check_merge_mode(merge_mode, self.label_list)
        self.layout_nms = layout_nms
        self.merge_mode = merge_mode
        self.threads = threads
        self.gpu_memory_fraction = gpu_memory_fraction
        pkg = importlib.metadata.version("transformers")
        digest = sha256_file(self.folder / _WEIGHTS)[:12]
        name = Path(str(model)).name or self.folder.name
        self.version = f"transformers-{pkg}/{name}@{digest}"
        # Pages per forward pass, most recent last (a batching check for tests, benchmarks).
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=10_000)
        self._queue: queue.SimpleQueue[_Page | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._model: Any = None
        self._processor: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closing = threading.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> TransformersLayoutEngine:
        return cls(
            settings.layout_model,
            device=settings.layout_device,
            dtype=settings.layout_dtype,
            batch_size=settings.layout_batch_size,
            batch_wait_ms=settings.layout_batch_wait_ms,
            threshold=settings.layout_threshold,
            layout_nms=settings.layout_nms,
            merge_mode=settings.layout_merge_mode,
            threads=settings.onnx_threads,
            gpu_memory_fraction=settings.layout_gpu_memory_fraction,
        )

    # -- public API -------------------------------------------------------------------

    def warmup(self) -> None:
        """Loads the model and runs one blank page through the whole path."""
        self._start()
        self.detect(np.full((256, 192, 3), 255, dtype=np.uint8))

    def healthy(self) -> bool:
        thread = self._thread
        return (
            self._error is None
            and not self._closing.is_set()
            and (thread is None or thread.is_alive())
        )

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=60)
        self._model = None

    def detect(self, image: np.ndarray) -> list[LayoutRegion]:
        return self.detect_many([image])[0]

    def detect_many(self, images: Sequence[np.ndarray]) -> list[list[LayoutRegion]]:
        """Regions of each BGR page image; all pages go to the engine thread at once."""
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"expected a BGR image H x W x 3, got shape {image.shape}")
        self._start()
        pages = [_Page(self._preprocess(image)) for image in images]
        for page in pages:
            self._queue.put(page)
        self._check_alive()
        out = []
        for image, page in zip(images, pages, strict=True):
            outputs = page.future.result()
            height, width = image.shape[:2]
            out.append(
                regions_from_detections(self._decode(outputs, width, height), self.label_list)
            )
        return out

    # -- caller side ------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self._error is not None:
            raise EngineDead(f"layout engine died: {self._error!r}") from self._error
        if self._closing.is_set() or self._thread is None or not self._thread.is_alive():
            raise EngineDead("layout engine is closed")

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            if self._closing.is_set():
                raise EngineDead("layout engine is closed")
            self._load()
            self._thread = threading.Thread(target=self._run, name="layout-engine", daemon=True)
            self._thread.start()

    def _load(self) -> None:
        from workers.engines.torch_compat import apply_torch_compat

        apply_torch_compat()  # the image processor imports torchvision
        import torch
        from transformers import PPDocLayoutV3ForObjectDetection, PPDocLayoutV3ImageProcessor

        if self.threads and self.device == "cpu":
            torch.set_num_threads(self.threads)
        if self.device.startswith("cuda") and self.gpu_memory_fraction:
            torch.cuda.set_per_process_memory_fraction(
                self.gpu_memory_fraction, torch.device(self.device)
            )
        started = time.perf_counter()
        self._processor = PPDocLayoutV3ImageProcessor.from_pretrained(self.folder)
        model: Any = PPDocLayoutV3ForObjectDetection.from_pretrained(
            self.folder, dtype=getattr(torch, self.dtype)
        )
        self._model = model.to(self.device).eval()
        log.info(
            "layout model %s on %s (%s) in %.1f s",
            self.version,
            self.device,
            self.dtype,
            time.perf_counter() - started,
        )

    def _preprocess(self, image: np.ndarray) -> Any:
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        return self._processor(images=[rgb], return_tensors="pt")["pixel_values"]

    def _decode(self, out: _Outputs, width: int, height: int) -> list[Detection]:
        """One page's raw outputs → its final detections (see layout_detections)."""
        queries, classes = out.logits.shape
        scores = 0.5 * (1.0 + np.tanh(out.logits.reshape(-1) / 2))  # sigmoid
        # The best (query, class) pairs, as many as there are queries: a query may appear
        # under two classes and NMS settles it.
        top = np.argsort(-scores, kind="stable")[:queries]
        thresholds = self.thresholds
        floor = min(thresholds.values()) if isinstance(thresholds, dict) else thresholds
        top = top[scores[top] >= floor]
        order = _reading_ranks(out.order_logits)
        cx, cy, w, h = (out.boxes[:, i] for i in range(4))
        raw = []
        for flat in top:
            q, c = divmod(int(flat), classes)
            raw.append(
                Detection(
                    cls_id=c,
                    label=self.label_list[c] if c < len(self.label_list) else None,
                    score=float(scores[flat]),
                    box=(
                        float((cx[q] - w[q] / 2) * width),
                        float((cy[q] - h[q] / 2) * height),
                        float((cx[q] + w[q] / 2) * width),
                        float((cy[q] + h[q] / 2) * height),
                    ),
                    order=int(order[q]),
                    query=q,
                )
            )
        kept = postprocess(
            raw,
            width,
            height,
            threshold=thresholds,
            layout_nms=self.layout_nms,
            merge_mode=self.merge_mode,
            label_list=self.label_list,
        )
        # Polygons last: only for the boxes that survived.
        return [
            replace(d, polygon=mask_polygon(out.masks[d.query], d.box, floor, width, height))
            if d.query is not None
            else d
            for d in kept
        ]

    # -- engine thread ----------------------------------------------------------------

    def _run(self) -> None:
        import torch

        try:
            while not self._closing.is_set():
                batch = self._take_batch()
                if not batch:
                    break
                self._forward(torch, batch)
        except BaseException as exc:
            log.exception("layout engine died")
            self._error = exc
        finally:
            self._fail_queued()

    def _take_batch(self) -> list[_Page]:
        """The first waiting page (blocking), then whatever else arrives within the wait."""
        first = self._queue.get()
        if first is None:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                page = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if page is None:
                self._closing.set()
                break
            batch.append(page)
        return batch

    def _forward(self, torch: Any, batch: list[_Page]) -> None:
        try:
            pixels = torch.cat([p.pixel_values for p in batch]).to(
                self.device, getattr(torch, self.dtype)
            )
            with torch.inference_mode():
                out = self._model(pixel_values=pixels)
            arrays = [
                t.detach().float().cpu().numpy()
                for t in (out.logits, out.pred_boxes, out.order_logits, out.out_masks)
            ]
        except Exception as exc:  # this batch fails (e.g. out of memory); the engine goes on
            log.warning("layout forward pass of %d pages failed: %s", len(batch), exc)
            for page in batch:
                page.future.set_exception(exc)
            return
        self.batch_sizes.append(len(batch))
        log.info("layout forward pass: %d pages", len(batch))
        for i, page in enumerate(batch):
            page.future.set_result(_Outputs(*(a[i] for a in arrays)))

    def _fail_queued(self) -> None:
        dead = EngineDead("layout engine stopped")
        while True:
            try:
                page = self._queue.get_nowait()
            except queue.Empty:
                return
            if page is not None and not page.future.done():
                page.future.set_exception(dead)


def mask_polygon(
    mask_logits: np.ndarray,
    box: tuple[float, float, float, float],
    threshold: float,
    width: int,
    height: int,
) -> np.ndarray | None:
    """The outline of a detection's mask inside its box, in page pixels, simplified; None
    when the mask gives no shape of at least four corners (the box is then the shape).

    The mask covers the whole (resized) page at a quarter of the model's input size, so the
    box is cut out of it at that scale and scaled up to the box's size in page pixels."""
    import cv2

    x0, y0, x1, y1 = (int(v) for v in box)
    box_w, box_h = x1 - x0, y1 - y0
    if box_w <= 0 or box_h <= 0:
        return None
    mask_h, mask_w = mask_logits.shape
    sx, sy = mask_w / width, mask_h / height
    mx0, mx1 = np.clip([round(x0 * sx), round(x1 * sx)], 0, mask_w)
    my0, my1 = np.clip([round(y0 * sy), round(y1 * sy)], 0, mask_h)
    # sigmoid(logit) > threshold, without the exponent
    p = min(max(threshold, 1e-6), 1 - 1e-6)
    cut = mask_logits[my0:my1, mx0:mx1] > np.log(p / (1 - p))
    if cut.size == 0 or not cut.any():
        return None
    resized = cv2.resize(cut.astype(np.uint8), (box_w, box_h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(resized, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    outline = max(contours, key=cv2.contourArea)
    approx = cv2.approxPolyDP(outline, 0.004 * cv2.arcLength(outline, True), True)
    points = approx.reshape(-1, 2).astype(float)
    if len(points) < 4:
        return None
    points += (x0, y0)
    points[:, 0] = np.clip(points[:, 0], 0, width)
    points[:, 1] = np.clip(points[:, 1], 0, height)
    return points


def _reading_ranks(order_logits: np.ndarray) -> np.ndarray:
    """Each query's rank in reading order. order_logits[i, j] says "i comes before j"; a
    query's votes count what comes before it (PP-DocLayout-V3's order head)."""
    p = 0.5 * (1.0 + np.tanh(order_logits / 2))  # sigmoid, without overflow
    votes = np.triu(p, 1).sum(axis=0) + np.tril(1.0 - p.T, -1).sum(axis=0)
    ranks = np.empty(len(votes), dtype=np.int64)
    ranks[np.argsort(votes, kind="stable")] = np.arange(len(votes))
    return ranks
