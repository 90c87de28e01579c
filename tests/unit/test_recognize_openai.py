"""OpenAIRecognizer's HTTP behaviour against a tiny local server: retries, Retry-After, auth."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import numpy as np
import pytest

from app.settings import Settings
from workers.engines.recognize_openai import (
    OpenAIRecognizer,
    backoff_seconds,
    retry_after_seconds,
)
from workers.engines.types import RecognitionRequest, RecognitionTask


class Script(BaseHTTPRequestHandler):
    """Answers POSTs from a script of (status, headers, body) and records the requests."""

    script: ClassVar[list[tuple[int, dict[str, str], dict[str, Any]]]] = []
    seen: ClassVar[list[dict[str, Any]]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        with self.lock:
            auth = self.headers.get("Authorization")
            Script.seen.append({"path": self.path, "auth": auth, **body})
            status, headers, payload = Script.script.pop(0) if Script.script else ANSWER
        data = json.dumps(payload).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass


ANSWER = (
    200,
    {},
    {
        "choices": [{"message": {"content": "hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 2},
    },
)


@pytest.fixture()
def server() -> Iterator[str]:
    Script.script = []
    Script.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Script)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def recognizer(base_url: str, sleeps: list[float], **overrides: Any) -> OpenAIRecognizer:
    values: dict[str, Any] = {
        "openai_base_url": base_url,
        "openai_model": "glm-ocr",
        "openai_api_key": "secret",
        "openai_max_retries": 3,
        "openai_concurrency": 4,
        "openai_timeout_seconds": 5.0,
    }
    values.update(overrides)
    return OpenAIRecognizer(Settings(**values), sleep=sleeps.append)


def request(key: str = "r1", task: RecognitionTask = RecognitionTask.TEXT) -> RecognitionRequest:
    return RecognitionRequest(key, np.full((40, 80, 3), 200, np.uint8), task)


def test_429_then_200_honours_retry_after(server: str) -> None:
    Script.script = [(429, {"Retry-After": "3"}, {"error": "slow down"}), ANSWER]
    sleeps: list[float] = []
    engine = recognizer(server, sleeps)
    try:
        (result,) = engine.recognize([request()])
    finally:
        engine.close()
    assert result.ok and result.content == "hello"
    assert result.attempts == 1  # HTTP retries are not recognition attempts
    assert result.prompt_tokens == 30 and result.completion_tokens == 2
    assert sleeps == [3.0]
    assert len(Script.seen) == 2


def test_request_shape(server: str) -> None:
    sleeps: list[float] = []
    engine = recognizer(server, sleeps, max_tokens=123)
    try:
        engine.recognize([request(task=RecognitionTask.TABLE)])
    finally:
        engine.close()
    (sent,) = Script.seen
    assert sent["path"] == "/v1/chat/completions"
    assert sent["auth"] == "Bearer secret"
    assert sent["model"] == "glm-ocr"
    assert sent["max_tokens"] == 123 and sent["temperature"] == 0.0
    image, text = sent["messages"][0]["content"]
    assert image["type"] == "image_url"
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    assert text == {"type": "text", "text": "Table Recognition:"}


def test_5xx_backs_off_exponentially_then_fails_region(server: str) -> None:
    Script.script = [(503, {}, {"error": "busy"})] * 10
    sleeps: list[float] = []
    engine = recognizer(server, sleeps, openai_max_retries=2)
    try:
        (result,) = engine.recognize([request()])
    finally:
        engine.close()
    assert not result.ok and "503" in (result.error or "")
    assert result.attempts == 2  # the region was tried twice, each with 3 HTTP attempts
    assert len(Script.seen) == 6
    assert len(sleeps) == 4 and sleeps[1] > sleeps[0] * 0.9


def test_400_is_not_retried_over_http(server: str) -> None:
    Script.script = [(400, {}, {"error": "bad"})] * 4
    sleeps: list[float] = []
    engine = recognizer(server, sleeps)
    try:
        (result,) = engine.recognize([request()])
    finally:
        engine.close()
    assert not result.ok and "400" in (result.error or "")
    assert sleeps == []
    assert len(Script.seen) == 2  # first try, and the one recognition retry


def test_length_then_retry_with_sampling(server: str) -> None:
    truncated = (
        200,
        {},
        {
            "choices": [{"message": {"content": "abc"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 5},
        },
    )
    Script.script = [truncated, ANSWER]
    engine = recognizer(server, [])
    try:
        (result,) = engine.recognize([request("key-1")])
    finally:
        engine.close()
    assert result.ok and result.attempts == 2
    assert result.extra["first_attempt"]["finish_reason"] == "length"
    first, second = Script.seen
    assert first["temperature"] == 0.0
    assert second["temperature"] > 0 and "repetition_penalty" in second and "seed" in second


def test_runaway_answer_is_cut_and_failed(server: str) -> None:
    runaway = (
        200,
        {},
        {
            "choices": [{"message": {"content": "Title\n" + "la " * 200}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 200},
        },
    )
    Script.script = [runaway, runaway]
    engine = recognizer(server, [])
    try:
        (result,) = engine.recognize([request()])
    finally:
        engine.close()
    assert not result.ok
    assert result.finish_reason == "repetition" and result.truncated
    assert result.content == "Title\nla"


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    now = 1_000_000.0
    assert retry_after_seconds(formatdate(now + 10, usegmt=True), now=now) == pytest.approx(10)
    assert retry_after_seconds(formatdate(now - 10, usegmt=True), now=now) == 0.0


def test_backoff_grows_and_is_capped() -> None:
    assert backoff_seconds(0) <= 0.5
    assert 4.0 <= backoff_seconds(4) <= 8.0
    assert backoff_seconds(30) <= 30.0
