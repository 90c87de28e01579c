"""The benchmarks' no-cost engines: what they answer, and that no setting reaches them."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from app.settings import Settings
from benchmarks.nocost import NoCostLayout, NoCostRecognizer
from benchmarks.stage_timings import percentile
from workers.engines.types import RecognitionRequest, RecognitionTask


def test_nocost_layout_gives_r_text_regions_inside_the_page() -> None:
    regions = NoCostLayout(20).detect(np.zeros((842, 595, 3), dtype=np.uint8))
    assert len(regions) == 20
    assert {r.label for r in regions} == {"text"}
    for r in regions:
        x0, y0, x1, y1 = r.bbox
        assert 0 <= x0 < x1 <= 595 and 0 <= y0 < y1 <= 842
    tops = [r.bbox[1] for r in regions]
    assert tops == sorted(tops) and len(set(tops)) == 20


def test_nocost_recognizer_answers_every_request_by_key() -> None:
    crop = np.zeros((10, 10, 3), dtype=np.uint8)
    requests = [RecognitionRequest(str(i), crop, RecognitionTask.TEXT) for i in (3, 1)]
    results = NoCostRecognizer().recognize(requests)
    assert [(r.key, r.content, r.ok) for r in results] == [
        ("3", "region 3", True),
        ("1", "region 1", True),
    ]


@pytest.mark.parametrize("field", ["layout_engine", "recognizer"])
def test_no_setting_selects_a_benchmark_engine(field: str) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: "nocost"})


def test_the_workers_own_app_ignores_the_benchmark_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only benchmarks.worker reads BENCH_NOCOST_REGIONS; `pagemill worker` loads
    workers.tasks, which builds the engines settings choose."""
    import importlib

    from workers.engines import registry

    monkeypatch.setenv("BENCH_NOCOST_REGIONS", "5")
    importlib.import_module("workers.tasks")
    assert not any(getattr(e, "name", None) == "nocost" for e in registry._engines.values())


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([4.0], 0.95) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert percentile([0.0, 10.0], 0.95) == pytest.approx(9.5)
