"""The shared PP-DocLayout-V3 post-processing and mapping (workers.engines.layout_detections)."""

from __future__ import annotations

import numpy as np
import pytest

from workers.engines.layout_detections import (
    Detection,
    check_merge_mode,
    class_thresholds,
    merge_nested,
    nms,
    postprocess,
    regions_from_detections,
)
from workers.engines.layout_paddlex import detections_from_paddlex, regions_from_paddlex
from workers.labels import LABELS

W, H = 1000, 1400


def det(
    label: str,
    box: tuple[float, float, float, float],
    score: float = 0.9,
    order: int | None = None,
) -> Detection:
    return Detection(cls_id=LABELS.index(label), label=label, score=score, box=box, order=order)


def test_nms_same_class_drops_the_weaker_overlap_other_class_keeps_it() -> None:
    a = det("text", (0, 0, 100, 100), 0.9)
    b = det("text", (5, 5, 100, 100), 0.8)  # IoU 0.9 with a, same class
    c = det("table", (5, 5, 100, 100), 0.7)  # same box as b, other class: IoU < 0.98 with a
    d = det("text", (300, 300, 400, 400), 0.5)
    assert nms([a, b, c, d]) == [a, c, d]
    twin = det("table", (0, 0, 100, 100), 0.6)  # the same box as a under another class
    assert nms([a, twin]) == [a]


def test_merge_large_keeps_the_outer_box_but_never_drops_figures() -> None:
    outer = det("text", (0, 0, 500, 500))
    inner = det("paragraph_title", (10, 10, 200, 60))
    figure = det("image", (100, 100, 300, 300))
    assert merge_nested([outer, inner, figure], "large") == [outer, figure]
    assert merge_nested([outer, inner, figure], "union") == [outer, inner, figure]


def test_merge_small_keeps_the_inner_boxes() -> None:
    outer = det("text", (0, 0, 500, 500))
    inner = det("paragraph_title", (10, 10, 200, 60))
    apart = det("text", (600, 600, 700, 700))
    assert merge_nested([outer, inner, apart], "small") == [inner, apart]


def test_merge_per_label_as_glm_ocr_configures_it() -> None:
    # `reference: small`: a box holding a reference entry gives way to the entries.
    block = det("reference_content", (0, 0, 500, 500))
    entry = det("reference", (10, 10, 490, 60))
    text = det("text", (0, 600, 500, 900))
    title = det("paragraph_title", (10, 610, 300, 650))
    mode = {"reference": "small", "text": "large"}
    assert merge_nested([block, entry, text, title], mode) == [entry, text]
    with pytest.raises(ValueError, match="unknown labels"):
        check_merge_mode({"refrence": "small"})
    with pytest.raises(ValueError, match="not one of"):
        check_merge_mode("biggest")


def test_postprocess_thresholds_per_label() -> None:
    dets = [det("table", (0, 0, 100, 100), 0.5), det("text", (0, 200, 100, 300), 0.5)]
    per = class_thresholds({"table": 0.6, "default": 0.4})
    kept = postprocess(dets, W, H, threshold=per)
    assert [d.label for d in kept] == ["text"]
    assert postprocess(dets, W, H, threshold=0.55) == []


def test_postprocess_orders_in_flow_regions_from_one_and_clips() -> None:
    dets = [
        det("text", (100, 500, 900, 700), order=40),
        det("header", (100, 10, 900, 60), order=3),
        det("doc_title", (100, 100, 900, 200), order=7),
        det("number", (480, 1350, 520, 1500), order=90),  # crosses the page's foot
    ]
    kept = postprocess(dets, W, H)
    assert [(d.label, d.order) for d in kept] == [
        ("header", None),
        ("doc_title", 1),
        ("text", 2),
        ("number", None),
    ]
    assert kept[-1].box == (480, 1350, 520, H)


def test_postprocess_drops_a_page_sized_image_but_not_a_lone_one() -> None:
    page = det("image", (0, 0, W, H))
    text = det("text", (100, 100, 900, 200))
    assert [d.label for d in postprocess([page, text], W, H)] == ["text"]
    assert [d.label for d in postprocess([page], W, H)] == ["image"]


def test_regions_from_detections_maps_labels_once_for_both_engines() -> None:
    dets = [
        Detection(cls_id=21, label=None, score=0.8, box=(0, 0, 50, 50)),  # by class id
        Detection(cls_id=99, label="sticker", score=0.8, box=(0, 60, 50, 90)),  # unknown
        Detection(cls_id=22, label="text", score=0.8, box=(0, 0, 0.5, 40)),  # degenerate
        Detection(
            cls_id=14,
            label="image",
            score=0.7,
            box=(10, 10, 60, 60),
            order=None,
            polygon=np.array([[10, 10], [60, 10], [60, 60], [10, 60]]),
        ),
    ]
    regions = regions_from_detections(dets)
    assert [r.label for r in regions] == ["table", "text", "image"]
    assert regions[1].source_label == "sticker"
    assert regions[2].polygon == [(10.0, 10.0), (60.0, 10.0), (60.0, 60.0), (10.0, 60.0)]
    # PaddleX's result goes through the same mapping.
    result = {"boxes": [{"cls_id": 21, "score": 0.8, "coordinate": [0, 0, 50, 50]}]}
    assert detections_from_paddlex(result)[0].cls_id == 21
    assert regions_from_paddlex(result) == regions_from_detections(detections_from_paddlex(result))
