import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.settings import Settings
from workers.engines.layout_paddlex import (
    LayoutModelMissing,
    PaddleXLayoutEngine,
    PaddleXUnavailable,
    check_model_dir,
    class_thresholds,
    regions_from_paddlex,
)
from workers.labels import LABELS
from workers.reading_order import order_regions

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "paddlex"
W, H = 1654, 2339


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def fake_model_dir(tmp_path: Path, name: str = "PP-DocLayoutV3") -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "inference.yml").write_text(f"Global:\n  model_name: {name}\nlabel_list: []\n")
    (d / "inference.pdiparams").write_bytes(b"\x00" * 64)
    (d / "inference.json").write_text("{}")
    return d


def test_regions_from_paddlex_two_column_paper() -> None:
    regions = regions_from_paddlex(load("two_column_paper.json"))
    assert len(regions) == 18
    assert all(r.label in LABELS for r in regions)
    title = next(r for r in regions if r.label == "doc_title")
    assert title.order == 1
    assert title.bbox == (300.4, 150.1, 1352.9, 236.7)
    assert title.score == pytest.approx(0.9712)
    assert title.polygon == [(300.4, 150.1), (1352.9, 150.1), (1352.9, 236.7), (300.4, 236.7)]
    image = next(r for r in regions if r.label == "image")
    assert image.polygon is not None and len(image.polygon) == 5
    unordered = {r.label for r in regions if r.order is None}
    assert unordered == {
        "header",
        "formula_number",
        "aside_text",
        "footnote",
        "footer",
        "number",
    }


def test_model_order_from_fixture() -> None:
    regions = regions_from_paddlex(load("two_column_paper.json"))
    ordered = order_regions(regions, W, H)
    labels = [r.label for r in ordered]
    assert labels[0] == "header"
    assert labels[1] == "doc_title"
    assert labels[-3:] == ["footnote", "footer", "number"]
    # The formula number follows its formula; the margin note sits beside the body text.
    assert labels[labels.index("display_formula") + 1] == "formula_number"
    in_flow = [r.order for r in ordered if r.order is not None]
    assert in_flow == sorted(in_flow)


def test_regions_from_paddlex_wrapped_json_form_and_all_labels() -> None:
    regions = regions_from_paddlex(load("manual_page_res.json"))
    assert len(regions) == 11
    seal = next(r for r in regions if r.label == "seal")
    assert seal.order is None and seal.polygon is not None and len(seal.polygon) == 8
    both = regions + regions_from_paddlex(load("two_column_paper.json"))
    assert {r.label for r in both} == set(LABELS)


def test_regions_from_paddlex_blank_and_odd_entries() -> None:
    assert regions_from_paddlex(load("blank_page.json")) == []
    result = {
        "boxes": [
            # Label missing: taken from cls_id.
            {"cls_id": 22, "score": 0.9, "coordinate": [0, 0, 100, 50]},
            # Unknown label and class: read as text, name kept.
            {"cls_id": 99, "label": "sticker", "score": 0.8, "coordinate": [0, 60, 100, 90]},
            # Degenerate: dropped.
            {"cls_id": 22, "label": "text", "score": 0.9, "coordinate": [5, 5, 5.2, 40]},
            # numpy values and an empty polygon.
            {
                "cls_id": np.int64(21),
                "label": "table",
                "score": np.float32(0.75),
                "coordinate": np.array([10.0, 100.0, 200.0, 300.0], dtype=np.float32),
                "polygon_points": np.zeros((0, 2)),
                "order": np.int64(3),
            },
        ]
    }
    regions = regions_from_paddlex(result)
    assert [r.label for r in regions] == ["text", "text", "table"]
    assert regions[1].source_label == "sticker"
    assert regions[2].order == 3 and regions[2].polygon is None
    assert isinstance(regions[2].score, float) and regions[2].bbox == (10.0, 100.0, 200.0, 300.0)


def test_class_thresholds() -> None:
    assert class_thresholds(0.4) == 0.4
    per = class_thresholds({"table": 0.5, "text": 0.2, "default": 0.35})
    assert isinstance(per, dict) and len(per) == 25
    assert per[LABELS.index("table")] == 0.5
    assert per[LABELS.index("text")] == 0.2
    assert per[LABELS.index("image")] == 0.35
    with pytest.raises(ValueError, match="unknown labels"):
        class_thresholds({"tabel": 0.5})


def test_missing_weights_unset() -> None:
    with pytest.raises(LayoutModelMissing, match="PAGEMILL_PADDLEX_MODEL_DIR is not set"):
        PaddleXLayoutEngine.from_settings(Settings(layout_engine="paddlex"))


def test_missing_weights_folder_absent(tmp_path: Path) -> None:
    with pytest.raises(LayoutModelMissing, match="does not exist") as err:
        check_model_dir(tmp_path / "nowhere")
    assert "inference.pdiparams" in str(err.value)


def test_missing_weights_folder_incomplete(tmp_path: Path) -> None:
    d = fake_model_dir(tmp_path)
    (d / "inference.pdiparams").unlink()
    (d / "inference.json").unlink()
    with pytest.raises(LayoutModelMissing, match="incomplete") as err:
        PaddleXLayoutEngine(model_dir=d)
    assert "inference.pdiparams" in str(err.value) and "inference.json" in str(err.value)


def test_wrong_model_in_folder(tmp_path: Path) -> None:
    d = fake_model_dir(tmp_path, name="PP-DocLayout-L")
    with pytest.raises(LayoutModelMissing, match="PP-DocLayout-L"):
        check_model_dir(d, "PP-DocLayoutV3")


def test_paddlex_not_installed_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "paddlex", None)
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(PaddleXUnavailable, match="pagemill\\[paddlex\\]"):
        PaddleXLayoutEngine(model_dir=fake_model_dir(tmp_path))


def test_checks_happen_before_paddlex_is_imported(tmp_path: Path) -> None:
    with pytest.raises(LayoutModelMissing):
        PaddleXLayoutEngine(model_dir=None)
    assert "paddlex" not in sys.modules


class FakeModel:
    """Stands in for paddlex.create_model(...): records calls, replays a recorded result."""

    def __init__(self, result: dict[str, Any], **kwargs: Any) -> None:
        self.created_with = kwargs
        self.config = {"label_list": list(LABELS)}
        self.calls: list[dict[str, Any]] = []
        self.result = result

    def predict(self, image: np.ndarray, **kwargs: Any) -> Any:
        self.calls.append({"shape": image.shape, **kwargs})
        yield self.result


def test_engine_wires_settings_into_paddlex(tmp_path: Path) -> None:
    made: list[FakeModel] = []

    def factory(**kwargs: Any) -> FakeModel:
        made.append(FakeModel(load("two_column_paper.json"), **kwargs))
        return made[-1]

    settings = Settings(
        layout_engine="paddlex",
        paddlex_model_dir=fake_model_dir(tmp_path),
        layout_device="cuda:0",
        layout_batch_size=2,
        layout_threshold={"table": 0.6, "default": 0.3},
        layout_nms=False,
        layout_merge_mode="small",
        paddlex_layout_shape_mode="rect",
    )
    engine = PaddleXLayoutEngine.from_settings(settings, model_factory=factory)
    assert engine.version.startswith("paddlex-") and "/PP-DocLayoutV3@" in engine.version
    assert not made  # loaded lazily
    regions = engine.detect(np.zeros((H, W, 3), dtype=np.uint8))
    assert len(regions) == 18
    (model,) = made
    assert model.created_with == {
        "model_name": "PP-DocLayoutV3",
        "model_dir": str(settings.paddlex_model_dir),
        "device": "gpu:0",
    }
    (call,) = model.calls
    assert call["shape"] == (H, W, 3)
    assert call["batch_size"] == 2
    assert call["layout_nms"] is False
    assert call["layout_merge_bboxes_mode"] == "small"
    assert call["layout_shape_mode"] == "rect"
    assert call["threshold"][LABELS.index("table")] == 0.6
    assert call["threshold"][LABELS.index("text")] == 0.3
