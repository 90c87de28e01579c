"""The narrow interfaces every engine implements; the heavy machinery stays behind them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from app.errors import EngineDead, EngineUnavailable
from workers.engines.types import LayoutRegion, RecognitionRequest, RecognitionResult
from workers.lines import TextLine

__all__ = ["EngineDead", "EngineUnavailable", "LayoutEngine", "LineDetector", "Recognizer"]


class LayoutEngine(Protocol):
    name: str
    version: str

    def detect(self, image: np.ndarray) -> list[LayoutRegion]:
        """Regions of one page image (BGR), labels already mapped onto the 25 labels.

        Safe to call from several threads at once; engines that batch (transformers) run
        the pages of concurrent callers in one forward pass."""
        ...

    def warmup(self) -> None:
        """Load the model now (worker start-up) rather than on the first page; raises if the
        engine cannot work."""
        ...

    def healthy(self) -> bool:
        """False once the engine can no longer serve pages (its thread died)."""
        ...

    def close(self) -> None:
        """Release the model (and stop the engine's thread, if it has one)."""
        ...


class LineDetector(Protocol):
    name: str
    version: str

    def detect(self, image: np.ndarray) -> list[TextLine]:
        """Text lines of one page image (BGR), in its pixels."""
        ...

    def warmup(self) -> None: ...

    def healthy(self) -> bool: ...

    def close(self) -> None: ...


class Recognizer(Protocol):
    name: str
    version: str

    def recognize(self, requests: Sequence[RecognitionRequest]) -> list[RecognitionResult]:
        """Results in the order of `requests`.

        Engines that batch (vLLM) keep every request of every concurrent caller in flight at
        once; callers may call from several threads. A failing request yields a result with
        ok=False rather than raising, so one bad region never fails its page.
        """
        ...

    def warmup(self) -> RecognitionResult:
        """One real request through the whole path, before the worker takes messages: it
        loads what the first request would, and proves the engine answers (raises if not)."""
        ...

    def healthy(self) -> bool:
        """False when the engine can no longer answer (dead, stuck or closed)."""
        ...

    def close(self) -> None: ...
