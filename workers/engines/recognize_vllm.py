"""GLM-OCR in an in-process vLLM engine: the production recognizer of the gpu workers.

One engine per worker process, built once at start-up. Celery's threads pool calls
`recognize()` from several threads at once, each with all the regions of one page; the
engine must see all of them together so that it batches continuously. So:

- vLLM runs in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`: no EngineCore child process)
  and only one dedicated engine thread ever touches it. That thread takes every queued
  request into the engine, then steps it, and again, for as long as anything is running.
  A caller thread only enqueues its page's requests and waits on their futures, so every
  region of every page the worker holds is in flight at once.
- Greedy decoding with a max-token cap. The repetition guard watches each answer as it
  grows and aborts a runaway early (finish_reason "repetition"), instead of letting it run
  to the cap.
- A region that errors, truncates or (extraction) answers unparsable JSON is tried once
  more with sampling, then returned ok=False. One region never raises.
- If the engine itself dies, every waiting and later call raises `EngineDead`, and
  `healthy()` turns False: the worker process should exit non-zero and be restarted.

Heavy imports (torch, vllm) happen in the engine thread, never at module import.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.engines import glmocr
from workers.engines.base import EngineDead
from workers.engines.types import RecognitionRequest, RecognitionResult, RecognitionTask

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)

# How often (in new characters of an answer) the repetition guard looks at it while it grows.
GUARD_EVERY_CHARS = 32


def scratch_dir(settings: Settings) -> Path:
    return (settings.data_dir / "scratch").resolve()


def configure_environment(settings: Settings) -> dict[str, str]:
    """Points vLLM's and torch's caches and temp files into the project's scratch folder.

    Must run before vllm is imported (vLLM reads its environment at import). Values an
    operator has set are kept, except VLLM_ENABLE_V1_MULTIPROCESSING, which this design
    requires to be off. Returns what it set.
    """
    scratch = scratch_dir(settings)
    wanted = {
        "VLLM_CACHE_ROOT": str(scratch / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(scratch / "torchinductor"),
        "TRITON_CACHE_DIR": str(scratch / "triton"),
        "VLLM_RPC_BASE_PATH": str(scratch / "rpc"),
        "TMPDIR": str(scratch / "tmp"),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    applied: dict[str, str] = {}
    for key, value in wanted.items():
        if key not in os.environ:
            if key.endswith(("_ROOT", "_DIR", "_PATH")) or key == "TMPDIR":
                Path(value).mkdir(parents=True, exist_ok=True)
            os.environ[key] = value
            applied[key] = value
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    applied["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    return applied


def engine_kwargs(settings: Settings) -> dict[str, Any]:
    """vLLM EngineArgs from the settings; `vllm_engine_args` (JSON) overrides anything."""
    kwargs: dict[str, Any] = {
        "model": settings.vllm_model,
        "dtype": settings.vllm_dtype,
        "gpu_memory_utilization": settings.vllm_gpu_memory_utilization,
        "max_model_len": settings.vllm_max_model_len,
        "max_num_seqs": settings.vllm_max_num_seqs,
        "limit_mm_per_prompt": dict(settings.vllm_limit_mm_per_prompt),
        "disable_log_stats": True,
    }
    if settings.vllm_max_num_batched_tokens is not None:
        kwargs["max_num_batched_tokens"] = settings.vllm_max_num_batched_tokens
    if settings.vllm_speculative_config:
        kwargs["speculative_config"] = dict(settings.vllm_speculative_config)
    kwargs.update(settings.vllm_engine_args)
    return kwargs


@dataclass(slots=True)
class Generation:
    """What one generation request produced."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int = 0
    error: str | None = None


@dataclass(slots=True)
class _Job:
    request_id: str
    prompt: dict[str, Any]
    sampling: dict[str, Any]
    future: Future[Generation] = field(default_factory=Future)
    parts: list[str] = field(default_factory=list)
    chars: int = 0
    checked_at: int = 0
    result: Generation = field(default_factory=Generation)


@dataclass(slots=True)
class _Prepared:
    """One region, ready to send (or already failed before reaching the model)."""

    request: RecognitionRequest
    prompt: dict[str, Any] | None = None
    template: dict[str, Any] | None = None
    error: str | None = None


GREEDY: dict[str, Any] = {"temperature": 0.0}


class VllmRecognizer:
    """GLM-OCR recognizer on an in-process vLLM engine driven by one engine thread."""

    name = "vllm"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        startup_timeout: float = 1800.0,
        stall_seconds: float = 600.0,
    ):
        """Builds the engine (blocking until it is loaded); raises EngineDead if it cannot.

        `stall_seconds`: with requests in flight and no engine step finishing for this
        long, `healthy()` reports the engine as hung.
        """
        if settings is None:
            from app.settings import get_settings

            settings = get_settings()
        self.settings = settings
        self.version = f"glmocr-vllm:{settings.vllm_model}"
        # Per-instance knobs (tests and benchmarks adjust them on a live engine).
        self.max_tokens = settings.max_tokens
        self.repetition_window = settings.repetition_window
        self.repetition_max_repeats = settings.repetition_max_repeats
        self.peak_in_flight = 0  # most requests in the engine at once (a batching check)
        self.in_flight = 0
        self.stall_seconds = stall_seconds
        self._heartbeat = time.monotonic()
        self._engine: Any = None
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._ids = itertools.count()
        self._ready = threading.Event()
        self._closing = threading.Event()
        self._error: BaseException | None = None
        self.started_at = time.monotonic()
        self.load_seconds: float | None = None
        self._thread = threading.Thread(target=self._run, name="vllm-engine", daemon=True)
        self._thread.start()
        if not self._ready.wait(startup_timeout):
            self._closing.set()
            raise EngineDead(f"vLLM engine did not start within {startup_timeout:.0f} s")
        if self._error is not None:
            raise EngineDead(f"vLLM engine failed to start: {self._error!r}") from self._error

    # -- public API -------------------------------------------------------------------

    def healthy(self) -> bool:
        """True while the engine thread runs, has not failed and is not stuck in a step."""
        if self._error is not None or self._closing.is_set() or not self._thread.is_alive():
            return False
        stalled = time.monotonic() - self._heartbeat > self.stall_seconds
        return not (self.in_flight and stalled)

    def warmup(self) -> RecognitionResult:
        """One real request through the whole path; raises EngineDead if the engine fails.

        The worker reports ready only after this: it allocates what the first request
        would, and proves the engine answers. The result's `ok` tells whether the model's
        answer was clean (a blank test crop may legitimately give an odd answer).
        """
        import numpy as np

        image = np.full((56, 112, 3), 255, dtype=np.uint8)
        image[20:36, 10:100] = 0
        request = RecognitionRequest(key="warmup", image=image, task=RecognitionTask.TEXT)
        return self.recognize([request])[0]

    def recognize(self, requests: Sequence[RecognitionRequest]) -> list[RecognitionResult]:
        """Results in request order; all regions go into the engine together.

        Raises EngineDead (only) when the engine itself has died.
        """
        self._check_alive()
        prepared = [self._prepare(request) for request in requests]
        first = self._generate_all(prepared, retry=False)
        results = [self._judge(p, g, attempts=1) for p, g in zip(prepared, first, strict=True)]
        again = [i for i, r in enumerate(results) if not r.ok and prepared[i].prompt is not None]
        if again:
            second = self._generate_all([prepared[i] for i in again], retry=True)
            for i, generation in zip(again, second, strict=True):
                retried = self._judge(prepared[i], generation, attempts=2)
                results[i] = glmocr.after_retry(results[i], retried)
        return results

    def close(self) -> None:
        """Stops the engine thread and releases the engine."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._queue.put(None)
        self._thread.join(timeout=60)

    # -- caller side ------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self._error is not None:
            raise EngineDead(f"vLLM engine died: {self._error!r}") from self._error
        if self._closing.is_set() or not self._thread.is_alive():
            raise EngineDead("vLLM engine is closed")

    def _prepare(self, request: RecognitionRequest) -> _Prepared:
        """Prompt and resized image; a bad region fails here, alone."""
        try:
            region = glmocr.region_prompt(
                request, min_pixels=self.settings.min_pixels, max_pixels=self.settings.max_pixels
            )
        except (ValueError, TypeError) as exc:
            return _Prepared(request=request, error=f"{type(exc).__name__}: {exc}")
        prompt = {
            "prompt": glmocr.chat_prompt(region.text),
            "multi_modal_data": {"image": region.image},
        }
        return _Prepared(request=request, prompt=prompt, template=region.template)

    def _generate_all(self, prepared: Sequence[_Prepared], *, retry: bool) -> list[Generation]:
        """Queues every sendable region at once, then waits for all of them."""
        jobs: list[_Job | None] = []
        for item in prepared:
            if item.prompt is None:
                jobs.append(None)
                continue
            sampling = glmocr.retry_sampling(item.request.key) if retry else dict(GREEDY)
            job = _Job(
                request_id=f"{item.request.key}#{next(self._ids)}",
                prompt=item.prompt,
                sampling=sampling,
            )
            jobs.append(job)
            self._queue.put(job)
        self._check_alive()
        out: list[Generation] = []
        for item, pending in zip(prepared, jobs, strict=True):
            if pending is None:
                out.append(Generation(error=item.error))
                continue
            try:
                out.append(pending.future.result())
            except EngineDead:
                raise
            except Exception as exc:  # the engine rejected this one request
                out.append(Generation(error=f"{type(exc).__name__}: {exc}"))
        return out

    def _judge(self, item: _Prepared, gen: Generation, *, attempts: int) -> RecognitionResult:
        return glmocr.judge(
            item.request.key,
            text=gen.text,
            finish_reason=gen.finish_reason,
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens if gen.error is None else None,
            error=gen.error,
            attempts=attempts,
            template=item.template,
        )

    # -- engine thread ----------------------------------------------------------------

    def _run(self) -> None:
        engine = None
        running: dict[str, _Job] = {}
        try:
            engine, sampling_cls = self._start_engine()
        except BaseException as exc:
            log.exception("vLLM engine failed to start")
            self._error = exc
            self._ready.set()
            return
        self._engine = engine
        self._ready.set()
        try:
            self._loop(engine, sampling_cls, running)
        except BaseException as exc:
            log.exception("vLLM engine died")
            self._error = exc
        finally:
            self._fail_all(running)
            self._engine = None
            del engine
            import gc

            gc.collect()

    def _start_engine(self) -> tuple[Any, Any]:
        configure_environment(self.settings)
        from workers.engines.torch_compat import apply_torch_compat, route_vllm_subprocesses

        apply_torch_compat()
        route_vllm_subprocesses()
        from vllm import EngineArgs, SamplingParams
        from vllm.v1.engine.llm_engine import LLMEngine

        started = time.monotonic()
        engine = LLMEngine.from_engine_args(EngineArgs(**engine_kwargs(self.settings)))
        self.load_seconds = time.monotonic() - started
        log.info("vLLM engine loaded %s in %.1f s", self.settings.vllm_model, self.load_seconds)
        return engine, SamplingParams

    def _sampling(self, sampling_cls: Any, job: _Job) -> Any:
        from vllm.sampling_params import RequestOutputKind

        return sampling_cls(
            max_tokens=self.max_tokens,
            output_kind=RequestOutputKind.DELTA,
            **job.sampling,
        )

    def _admit(self, engine: Any, sampling_cls: Any, job: _Job, running: dict[str, _Job]) -> None:
        try:
            engine.add_request(job.request_id, job.prompt, self._sampling(sampling_cls, job))
        except Exception as exc:  # bad input for this request only (too long, bad image...)
            job.future.set_exception(exc)
            return
        running[job.request_id] = job
        self.peak_in_flight = max(self.peak_in_flight, len(running))

    def _loop(self, engine: Any, sampling_cls: Any, running: dict[str, _Job]) -> None:
        while True:
            # Take in everything queued; wait only when the engine has nothing to do.
            block = not engine.has_unfinished_requests()
            while True:
                try:
                    job = self._queue.get(block=block, timeout=0.5 if block else None)
                except queue.Empty:
                    break
                if job is None:
                    return
                block = False
                self._admit(engine, sampling_cls, job, running)
            if self._closing.is_set():
                return
            self.in_flight = len(running)
            self._heartbeat = time.monotonic()
            if not engine.has_unfinished_requests():
                continue
            for output in engine.step():
                job = running.get(output.request_id)
                if job is None:  # aborted by the guard, or not ours
                    continue
                self._collect(engine, job, output, running)

    def _collect(self, engine: Any, job: _Job, output: Any, running: dict[str, _Job]) -> None:
        result = job.result
        if result.prompt_tokens is None and output.prompt_token_ids is not None:
            result.prompt_tokens = len(output.prompt_token_ids)
        completion = output.outputs[0] if output.outputs else None
        if completion is not None:
            job.parts.append(completion.text)
            job.chars += len(completion.text)
            result.completion_tokens += len(completion.token_ids)
        if output.finished:
            result.text = "".join(job.parts)
            result.finish_reason = completion.finish_reason if completion else "abort"
            self._finish(job, running, guard=True)
            return
        if job.chars - job.checked_at >= GUARD_EVERY_CHARS:
            job.checked_at = job.chars
            text = "".join(job.parts)
            job.parts = [text]
            if self._runaway(text) is not None:
                engine.abort_request([job.request_id])
                result.text = text
                self._finish(job, running, guard=True)

    def _runaway(self, text: str) -> glmocr.Runaway | None:
        return glmocr.find_runaway(
            text, window=self.repetition_window, max_repeats=self.repetition_max_repeats
        )

    def _finish(self, job: _Job, running: dict[str, _Job], *, guard: bool) -> None:
        running.pop(job.request_id, None)
        result = job.result
        if guard:
            runaway = self._runaway(result.text)
            if runaway is not None:
                result.text = glmocr.cut_runaway(result.text, runaway)
                result.finish_reason = "repetition"
        job.future.set_result(result)

    def _fail_all(self, running: dict[str, _Job]) -> None:
        """Fails every request in the engine or still queued, so no caller waits forever."""
        reason = self._error
        dead = EngineDead(f"vLLM engine died: {reason!r}" if reason else "vLLM engine closed")
        for job in running.values():
            if not job.future.done():
                job.future.set_exception(dead)
        running.clear()
        while True:
            try:
                queued = self._queue.get_nowait()
            except queue.Empty:
                break
            if queued is not None and not queued.future.done():
                queued.future.set_exception(dead)
