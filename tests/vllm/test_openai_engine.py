"""OpenAIRecognizer against vLLM's real OpenAI-compatible server with the tiny GLM-OCR model.

The server is started by the test through our launcher (workers.engines.vllm_server) as a
subprocess on a free loopback port, and stopped afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.settings import Settings
from tests.support.tiny_glmocr import EXTRACTION_TEMPLATE, TARGETS, build_tiny_glmocr
from tests.support.vllm_serve import (
    ServerFailed,
    free_port,
    start,
    stop,
    tiny_server_args,
    wait_ready,
)
from workers.engines.recognize_openai import OpenAIRecognizer
from workers.engines.types import RecognitionRequest, RecognitionResult, RecognitionTask

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = ROOT / ".scratch"
SERVED_NAME = "tiny-glmocr"
STARTUP_TIMEOUT = 240.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a running `vllm serve` of the tiny model; stopped after the module."""
    model = build_tiny_glmocr(SCRATCH / "tiny-glmocr")
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    process = start(
        tiny_server_args(model, port, SERVED_NAME),
        scratch=SCRATCH / "openai-tests",
        log_path=log_path,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        try:
            wait_ready(process, base_url, timeout=STARTUP_TIMEOUT, log_path=log_path)
        except ServerFailed as exc:
            pytest.fail(str(exc))
        yield base_url
    finally:
        stop(process)


def make_recognizer(base_url: str, **overrides: object) -> OpenAIRecognizer:
    values: dict[str, object] = {
        "data_dir": SCRATCH / "openai-tests",
        "openai_base_url": base_url,
        "openai_model": SERVED_NAME,
        "openai_concurrency": 16,
        "openai_timeout_seconds": 60.0,
        "openai_max_retries": 2,
        "max_tokens": 64,
        "min_pixels": 28 * 28 * 2,
        "max_pixels": 28 * 28 * 8,
    }
    values.update(overrides)
    return OpenAIRecognizer(Settings(**values))  # type: ignore[arg-type]


def requests_for(page: int, n: int = 6) -> list[RecognitionRequest]:
    rng = np.random.default_rng(page)
    tasks = [RecognitionTask.TEXT, RecognitionTask.FORMULA, RecognitionTask.TABLE]
    sides = [(28, 56), (40, 90), (56, 56), (30, 120), (60, 80), (50, 50)]
    out = [
        RecognitionRequest(
            f"p{page}-r{i}",
            rng.integers(0, 256, (*sides[i % len(sides)], 3), dtype=np.uint8),
            tasks[i % 3],
        )
        for i in range(n)
    ]
    out.append(
        RecognitionRequest(
            f"p{page}-x",
            rng.integers(0, 256, (50, 50, 3), dtype=np.uint8),
            RecognitionTask.TEXT,
            template=json.dumps(EXTRACTION_TEMPLATE),
        )
    )
    return out


def test_health_and_warmup(server: str) -> None:
    recognizer = make_recognizer(server)
    try:
        assert recognizer.healthy()
        result = recognizer.warmup()
        assert result.ok, result.error
        assert result.finish_reason == "stop"
        assert result.prompt_tokens and result.completion_tokens
    finally:
        recognizer.close()
    assert not recognizer.healthy()


def test_pages_from_several_threads(server: str) -> None:
    recognizer = make_recognizer(server)
    results: dict[int, list[RecognitionResult]] = {}
    try:
        threads = [
            threading.Thread(
                target=lambda p=p: results.__setitem__(p, recognizer.recognize(requests_for(p)))
            )
            for p in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    finally:
        recognizer.close()
    expected = {
        RecognitionTask.TEXT: TARGETS["Text Recognition:"],
        RecognitionTask.FORMULA: TARGETS["Formula Recognition:"],
        RecognitionTask.TABLE: TARGETS["Table Recognition:"],
    }
    matched = 0
    for page in range(3):
        requests = requests_for(page)
        got = results[page]
        assert [r.key for r in got] == [r.key for r in requests]
        for request, result in zip(requests, got, strict=True):
            assert result.ok, (result.key, result.error, result.content)
            assert result.finish_reason == "stop" and not result.truncated
            assert result.prompt_tokens and result.prompt_tokens > 10
            assert result.completion_tokens and result.completion_tokens > 0
            if request.template is not None:
                assert set(result.extra["fields"]) == set(EXTRACTION_TEMPLATE)
            else:
                matched += result.content == expected[request.task]
    assert matched >= 0.8 * 3 * 6


def test_truncation_is_retried_then_failed(server: str) -> None:
    recognizer = make_recognizer(server, max_tokens=3)
    try:
        results = recognizer.recognize(requests_for(5, n=2))
    finally:
        recognizer.close()
    for result in results:
        assert not result.ok
        assert result.truncated and result.finish_reason == "length"
        assert result.attempts == 2
        assert result.completion_tokens == 3


def test_unreachable_server_fails_regions_without_raising() -> None:
    recognizer = make_recognizer(
        f"http://127.0.0.1:{free_port()}/v1", openai_max_retries=1, openai_timeout_seconds=2.0
    )
    recognizer._sleep = lambda seconds: None  # no real backoff in the test
    try:
        assert not recognizer.healthy()
        (result,) = recognizer.recognize(requests_for(6, n=1)[:1])
    finally:
        recognizer.close()
    assert not result.ok
    assert "connection" in (result.error or "")
    assert result.attempts == 2
