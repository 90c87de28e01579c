"""One engine of each kind per worker process, chosen by settings and built on first use."""

from __future__ import annotations

import threading
from typing import Any

from app.settings import Settings
from workers.engines.base import LayoutEngine, LineDetector, Recognizer

_lock = threading.Lock()
_engines: dict[str, Any] = {}


def layout_engine(settings: Settings) -> LayoutEngine:
    with _lock:
        engine = _engines.get("layout")
        if engine is None:
            if settings.layout_engine == "paddlex":
                from workers.engines.layout_paddlex import PaddleXLayoutEngine

                engine = PaddleXLayoutEngine.from_settings(settings)
            elif settings.layout_engine == "transformers":
                from workers.engines.layout_transformers import TransformersLayoutEngine

                engine = TransformersLayoutEngine.from_settings(settings)
            else:
                from workers.engines.layout_rapid import RapidLayoutEngine

                engine = RapidLayoutEngine.from_settings(settings)
            _engines["layout"] = engine
        return engine


def line_detector(settings: Settings) -> LineDetector | None:
    """The page-level text-line detector, or None when line detection is off."""
    if not settings.line_detection:
        return None
    with _lock:
        engine = _engines.get("lines")
        if engine is None:
            from workers.engines.lines_rapidocr import RapidOcrLineDetector

            engine = RapidOcrLineDetector(
                threads=settings.onnx_threads, max_side=settings.line_detection_side
            )
            _engines["lines"] = engine
        return engine


def recognizer(settings: Settings) -> Recognizer:
    with _lock:
        engine = _engines.get("recognizer")
        if engine is None:
            engine = build_recognizer(settings)
            _engines["recognizer"] = engine
        return engine


def install(kind: str, engine: LayoutEngine | Recognizer) -> None:
    """Puts an engine built by the caller in place of the one settings would choose (the
    benchmarks' no-cost engines, in their own worker entry point). Deliberately not a
    setting: no configuration a user can make reaches an engine installed here."""
    if kind not in ("layout", "recognizer"):
        raise ValueError(f"unknown engine kind {kind!r}: layout or recognizer")
    with _lock:
        _engines[kind] = engine


def build_recognizer(settings: Settings) -> Recognizer:
    if settings.recognizer == "vllm":
        from workers.engines.recognize_vllm import VllmRecognizer

        return VllmRecognizer(settings)
    if settings.recognizer == "openai":
        from workers.engines.recognize_openai import OpenAIRecognizer

        return OpenAIRecognizer(settings)
    from workers.engines.recognize_rapidocr import RapidOcrRecognizer

    return RapidOcrRecognizer(threads=settings.onnx_threads)
