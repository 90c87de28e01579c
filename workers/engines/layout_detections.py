"""PP-DocLayout-V3's detections, whichever runtime produced them, and the one mapping onto
LayoutRegion.

Both PP-DocLayout-V3 engines (`paddlex`, `transformers`) turn their runtime's output into a
list of `Detection` and call `regions_from_detections`, so labels, boxes, polygons and order
reach the pipeline the same way. PaddleX filters and merges boxes itself; the transformers
engine does it here (`postprocess`), with the rules GLM-OCR's SDK applies to this model:
per-label thresholds, NMS (IoU 0.6 within a class, 0.98 across classes), a full-page `image`
dropped, nested boxes merged by mode, reading order from the model's order head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from workers.engines.types import LayoutRegion
from workers.labels import LABELS
from workers.reading_order import OUT_OF_FLOW_LABELS

MERGE_MODES = ("large", "small", "union")
# Never dropped for lying inside another box: a figure may well sit inside a text box.
_PRESERVED = frozenset({"image", "seal", "chart"})
# A box is inside another when this share of its own area is.
_CONTAINED = 0.8
_NMS_SAME_CLASS = 0.6
_NMS_OTHER_CLASS = 0.98


@dataclass(frozen=True, slots=True)
class Detection:
    """One box as the model gave it, in pixels of the input image."""

    cls_id: int | None
    label: str | None  # the model's own label name
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    order: int | None = None  # 1-based reading order; None outside the text flow
    polygon: Any = None  # N x 2 points, or None
    query: int | None = None  # the model output it came from, for data attached later


def class_thresholds(
    threshold: float | Mapping[str, float],
    label_list: Sequence[str] = LABELS,
    default: float = 0.3,
) -> float | dict[int, float]:
    """Settings' `layout_threshold` → one number, or `{class_id: threshold}` over every class.

    A mapping is keyed by label name (plus an optional "default" for the rest); every class
    gets a value because PaddleX falls back to 0.5 for a class missing from its dict.
    Unknown label names are an error.
    """
    if not isinstance(threshold, Mapping):
        return float(threshold)
    fallback = float(threshold.get("default", default))
    unknown = sorted(set(threshold) - set(label_list) - {"default"})
    if unknown:
        raise ValueError(f"layout_threshold: unknown labels {unknown}; labels are {label_list}")
    return {i: float(threshold.get(name, fallback)) for i, name in enumerate(label_list)}


def check_merge_mode(mode: str | Mapping[str, str], label_list: Sequence[str] = LABELS) -> None:
    """Raises ValueError for a mode or label name the merge step does not know."""
    modes = [mode] if isinstance(mode, str) else list(mode.values())
    bad = [m for m in modes if m not in MERGE_MODES]
    if bad:
        raise ValueError(f"layout_merge_mode: {bad} is not one of {MERGE_MODES}")
    if not isinstance(mode, str):
        unknown = sorted(set(mode) - set(label_list))
        if unknown:
            raise ValueError(f"layout_merge_mode: unknown labels {unknown}")


# -- the one mapping onto LayoutRegion -------------------------------------------------


def _polygon(points: Any) -> list[tuple[float, float]] | None:
    if points is None:
        return None
    arr = np.asarray(points, dtype=float)
    if arr.size == 0 or arr.size % 2:
        return None
    arr = arr.reshape(-1, 2)
    if len(arr) < 3:
        return None
    return [(float(x), float(y)) for x, y in arr]


def regions_from_detections(
    detections: Sequence[Detection], label_list: Sequence[str] = LABELS
) -> list[LayoutRegion]:
    """Detections → LayoutRegions, in the given order.

    The label is the model's name when it is one of the 25, else the class id's name in
    `label_list`; anything else becomes `text` (keeping the model's name in source_label),
    so an unexpected class is still read rather than lost. Degenerate boxes are dropped.
    """
    regions: list[LayoutRegion] = []
    for det in detections:
        x0, y0, x1, y1 = (float(v) for v in det.box)
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        cls_id = det.cls_id
        if det.label in LABELS:
            label = str(det.label)
        elif cls_id is not None and 0 <= cls_id < len(label_list) and label_list[cls_id] in LABELS:
            label = label_list[cls_id]
        else:
            label = "text"
        regions.append(
            LayoutRegion(
                label=label,
                bbox=(x0, y0, x1, y1),
                score=float(det.score),
                order=det.order,
                polygon=_polygon(det.polygon),
                source_label=det.label,
            )
        )
    return regions


# -- post-processing of raw model output (transformers engine) --------------------------


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _intersections(boxes: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas, n x n."""
    x0 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y0 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x1 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y1 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    return np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)


def nms(detections: Sequence[Detection]) -> list[Detection]:
    """Greedy NMS by score; a box overlapping a kept one of the same class by IoU ≥ 0.6 (or
    of another class by ≥ 0.98, i.e. the same box twice) is dropped."""
    if len(detections) < 2:
        return list(detections)
    boxes = np.array([d.box for d in detections], dtype=float)
    classes = np.array([-1 if d.cls_id is None else d.cls_id for d in detections])
    inter = _intersections(boxes)
    areas = _areas(boxes)
    iou = inter / np.maximum(areas[:, None] + areas[None, :] - inter, 1e-9)
    alive = np.ones(len(detections), dtype=bool)
    kept: list[int] = []
    for i in np.argsort([-d.score for d in detections], kind="stable"):
        if not alive[i]:
            continue
        kept.append(int(i))
        limit = np.where(classes == classes[i], _NMS_SAME_CLASS, _NMS_OTHER_CLASS)
        alive &= iou[i] < limit
    return [detections[i] for i in sorted(kept)]


def _contained_matrix(detections: Sequence[Detection]) -> np.ndarray:
    """inside[i, j]: box i lies (≥ 80 % of its area) inside box j, i != j."""
    boxes = np.array([d.box for d in detections], dtype=float)
    areas = _areas(boxes)
    inside = _intersections(boxes) >= _CONTAINED * np.maximum(areas[:, None], 1e-9)
    inside &= (areas > 0)[:, None]
    np.fill_diagonal(inside, False)
    return inside


def merge_nested(
    detections: Sequence[Detection],
    mode: str | Mapping[str, str],
    label_list: Sequence[str] = LABELS,
) -> list[Detection]:
    """Resolves boxes nested in others. `large` keeps the outer box (drops what lies inside
    another), `small` keeps the inner ones (drops a box holding others, unless it is itself
    inside one), `union` keeps both. Per label, the rule applies to pairs where that label's
    box is the outer one (`large`) or the inner one (`small`). image, seal and chart boxes
    are never dropped for lying inside another."""
    n = len(detections)
    if n < 2:
        return list(detections)
    names = [_name(d, label_list) for d in detections]
    preserved = np.array([name in _PRESERVED for name in names])
    inside = _contained_matrix(detections)
    inside[preserved, :] = False
    keep = np.ones(n, dtype=bool)
    rules = [(None, mode)] if isinstance(mode, str) else list(mode.items())
    for label, rule in rules:
        if rule == "union":
            continue
        of_label = np.array([label is None or name == label for name in names])
        if rule == "large":
            keep &= ~(inside & of_label[None, :]).any(axis=1)
        else:  # small
            pairs = inside & of_label[:, None]
            holds = pairs.any(axis=0)
            held = pairs.any(axis=1)
            keep &= ~holds | held
    return [d for d, k in zip(detections, keep, strict=True) if k]


def _name(det: Detection, label_list: Sequence[str]) -> str | None:
    if det.label is not None:
        return det.label
    if det.cls_id is not None and 0 <= det.cls_id < len(label_list):
        return label_list[det.cls_id]
    return None


def postprocess(
    detections: Sequence[Detection],
    width: int,
    height: int,
    *,
    threshold: float | Mapping[int, float] = 0.3,
    layout_nms: bool = True,
    merge_mode: str | Mapping[str, str] = "large",
    label_list: Sequence[str] = LABELS,
) -> list[Detection]:
    """Raw detections of one page (any order, `order` = the model's rank) → the page's
    detections: filtered, de-duplicated, merged, clipped to the page, sorted by the model's
    reading order and numbered from 1 (None for labels outside the text flow)."""
    dets = [
        d
        for d in detections
        if d.score
        >= (
            threshold.get(d.cls_id if d.cls_id is not None else -1, 0.5)
            if isinstance(threshold, Mapping)
            else threshold
        )
    ]
    if layout_nms:
        dets = nms(dets)
    if len(dets) > 1:
        # A page-sized `image` is the model seeing the page itself as a picture.
        limit = (0.82 if width > height else 0.93) * width * height
        dets = [
            d
            for d in dets
            if _name(d, label_list) != "image" or _clipped_area(d, width, height) <= limit
        ] or dets
    if merge_mode:
        dets = merge_nested(dets, merge_mode, label_list)
    dets.sort(key=lambda d: (d.order if d.order is not None else 1 << 30, -d.score))
    out: list[Detection] = []
    rank = 0
    for d in dets:
        x0, y0, x1, y1 = _clip(d.box, width, height)
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        polygon = d.polygon
        if polygon is not None:
            polygon = np.asarray(polygon, dtype=float).reshape(-1, 2).copy()
            polygon[:, 0] = np.clip(polygon[:, 0], 0, width)
            polygon[:, 1] = np.clip(polygon[:, 1], 0, height)
        order = None
        if _name(d, label_list) not in OUT_OF_FLOW_LABELS:
            rank += 1
            order = rank
        out.append(replace(d, box=(x0, y0, x1, y1), order=order, polygon=polygon))
    return out


def _clip(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return (
        min(max(0.0, min(x0, x1)), width),
        min(max(0.0, min(y0, y1)), height),
        min(max(0.0, max(x0, x1)), width),
        min(max(0.0, max(y0, y1)), height),
    )


def _clipped_area(det: Detection, width: int, height: int) -> float:
    x0, y0, x1, y1 = _clip(det.box, width, height)
    return (x1 - x0) * (y1 - y0)
