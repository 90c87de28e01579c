"""GLM-OCR through any OpenAI-compatible chat-completions server (an existing `vllm serve`).

Sends exactly what the vllm recognizer sends (same prompts, resizing, greedy decoding,
token cap, repetition guard, one retry with sampling), as chat completions with the image
as a base64 data URL. Uses httpx (no openai package): one pooled client per recognizer and a
bounded thread pool, so at most `openai_concurrency` requests are in flight for the whole
process whatever the number of caller threads, and all of a page's regions go out at once.

Transient failures (429, 5xx, connection errors, timeouts) are retried with exponential
backoff and jitter, honouring Retry-After. A region that still fails is returned ok=False.
"""

from __future__ import annotations

import base64
import email.utils
import io
import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from workers.engines import glmocr
from workers.engines.base import EngineDead
from workers.engines.types import RecognitionRequest, RecognitionResult, RecognitionTask

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
BACKOFF_BASE = 0.5  # seconds; doubles per attempt
BACKOFF_MAX = 30.0
RETRY_AFTER_MAX = 120.0  # never sleep longer than this on a server's say-so


class ServerUnavailable(EngineDead):
    """The server did not answer usefully after all HTTP retries.

    recognize() never raises it (a region fails instead: an outage may be brief); warmup()
    does, and as an EngineDead the worker treats it like a dead in-process engine.
    """


@dataclass(slots=True)
class Completion:
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_seconds(attempt: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter (attempt 0 is the first retry)."""
    ceiling = min(BACKOFF_MAX, BACKOFF_BASE * (2**attempt))
    return (rng or random).uniform(ceiling / 2, ceiling)


def image_data_url(picture: Any) -> str:
    """A PIL image as a PNG data URL (lossless: crops are small and text edges matter)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class OpenAIRecognizer:
    """GLM-OCR recognizer over an OpenAI-compatible HTTP API."""

    name = "openai"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Any = time.sleep,
    ):
        if settings is None:
            from app.settings import get_settings

            settings = get_settings()
        self.settings = settings
        self.version = f"glmocr-openai:{settings.openai_model}"
        self.base_url = settings.openai_base_url.rstrip("/")
        self.concurrency = max(1, settings.openai_concurrency)
        self.max_retries = max(0, settings.openai_max_retries)
        self._sleep = sleep
        headers = {"Content-Type": "application/json"}
        if settings.openai_api_key:
            headers["Authorization"] = f"Bearer {settings.openai_api_key.get_secret_value()}"
        timeout = settings.openai_timeout_seconds
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            limits=httpx.Limits(
                max_connections=self.concurrency, max_keepalive_connections=self.concurrency
            ),
            transport=transport,
        )
        # The pool is the concurrency limit: shared by every caller thread.
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="openai-ocr")
        self._closed = threading.Event()

    # -- public API -------------------------------------------------------------------

    def healthy(self) -> bool:
        """True if the server lists its models (a cheap liveness probe)."""
        if self._closed.is_set():
            return False
        try:
            return self._client.get("/models", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def warmup(self) -> RecognitionResult:
        """One real request; raises ServerUnavailable if the server cannot answer it."""
        import numpy as np

        image = np.full((56, 112, 3), 255, dtype=np.uint8)
        image[20:36, 10:100] = 0
        result = self.recognize([RecognitionRequest("warmup", image, RecognitionTask.TEXT)])[0]
        if result.error and result.unavailable:
            raise ServerUnavailable(result.error)
        return result

    def recognize(self, requests: Sequence[RecognitionRequest]) -> list[RecognitionResult]:
        """Results in request order; every region is sent at once (up to the limit)."""
        if self._closed.is_set():
            raise RuntimeError("recognizer is closed")
        futures = [self._pool.submit(self._one, request) for request in requests]
        return [future.result() for future in futures]

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    # -- one region -------------------------------------------------------------------

    def _one(self, request: RecognitionRequest) -> RecognitionResult:
        try:
            region = glmocr.region_prompt(
                request, min_pixels=self.settings.min_pixels, max_pixels=self.settings.max_pixels
            )
            url = image_data_url(region.image)
        except (ValueError, TypeError) as exc:
            return RecognitionResult(
                key=request.key, content="", ok=False, error=f"{type(exc).__name__}: {exc}"
            )
        first = self._attempt(
            request.key, url, region.text, region.template, attempts=1, retry=False
        )
        if first.ok:
            return first
        second = self._attempt(
            request.key, url, region.text, region.template, attempts=2, retry=True
        )
        return glmocr.after_retry(first, second)

    def _attempt(
        self,
        key: str,
        url: str,
        text: str,
        template: dict[str, Any] | None,
        *,
        attempts: int,
        retry: bool,
    ) -> RecognitionResult:
        sampling = glmocr.retry_sampling(key) if retry else {"temperature": 0.0}
        body = {
            "model": self.settings.openai_model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": url}},
                        {"type": "text", "text": text},
                    ],
                }
            ],
            "max_tokens": self.settings.max_tokens,
            "stream": False,
            **sampling,
        }
        unavailable = False
        try:
            completion = self._post(body)
        except ServerUnavailable as exc:
            completion = Completion(error=str(exc))
            unavailable = True
        if completion.error is None:
            runaway = glmocr.find_runaway(
                completion.text,
                window=self.settings.repetition_window,
                max_repeats=self.settings.repetition_max_repeats,
            )
            if runaway is not None:
                completion.text = glmocr.cut_runaway(completion.text, runaway)
                completion.finish_reason = "repetition"
        result = glmocr.judge(
            key,
            text=completion.text,
            finish_reason=completion.finish_reason,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            error=completion.error,
            attempts=attempts,
            template=template,
        )
        result.unavailable = unavailable
        return result

    def _post(self, body: dict[str, Any]) -> Completion:
        """POSTs one chat completion, retrying transient failures; raises ServerUnavailable."""
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            delay: float | None = None
            try:
                response = self._client.post("/chat/completions", json=body)
            except httpx.TimeoutException as exc:
                last = f"timeout: {exc!r}"
            except httpx.TransportError as exc:
                last = f"connection error: {exc!r}"
            else:
                if response.status_code == 200:
                    return self._parse(response)
                last = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code not in RETRY_STATUS:
                    return Completion(error=last)  # the request itself is wrong: no retry
                delay = retry_after_seconds(response.headers.get("Retry-After"))
            if attempt == self.max_retries:
                break
            wait = backoff_seconds(attempt) if delay is None else min(delay, RETRY_AFTER_MAX)
            log.info("openai recognizer: %s; retrying in %.2f s", last, wait)
            self._sleep(wait)
        raise ServerUnavailable(f"{last} (after {self.max_retries + 1} attempts)")

    @staticmethod
    def _parse(response: httpx.Response) -> Completion:
        try:
            payload = response.json()
            choice = payload["choices"][0]
            text = choice["message"].get("content") or ""
            usage = payload.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            return Completion(error=f"malformed response: {exc!r}")
        return Completion(
            text=text,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )
