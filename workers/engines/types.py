"""The values that flow between engines: layout regions in, recognition results out."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np


class RecognitionTask(StrEnum):
    """What a region is sent to the recognizer for (or not)."""

    TEXT = "text"
    FORMULA = "formula"
    TABLE = "table"
    SKIP = "skip"  # kept as an image crop, not recognized
    ABANDON = "abandon"  # dropped from the output (page headers, footers, numbers)


@dataclass(frozen=True, slots=True)
class LayoutRegion:
    """One region found by a layout engine, in pixels of the rendered page."""

    label: str  # one of PP-DocLayout-V3's 25 labels (workers.labels.LABELS)
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    order: int | None = None  # reading order from the model, when it gives one
    polygon: list[tuple[float, float]] | None = None
    source_label: str | None = None  # the engine's own label before mapping


@dataclass(frozen=True, slots=True)
class RecognitionRequest:
    """One crop to recognize. `key` lets the caller match results to its regions."""

    key: str
    image: np.ndarray  # BGR, uint8, H x W x 3
    task: RecognitionTask
    # Information extraction: a JSON template; the engine fills it instead of reading text.
    template: str | None = None
    # The text lines found in the page, as quads in this image's pixels (None: not looked
    # for). A line recognizer reads them instead of detecting lines again; others ignore it.
    lines: list[tuple[tuple[float, float], ...]] | None = None


@dataclass(slots=True)
class RecognitionResult:
    key: str
    content: str
    ok: bool = True
    error: str | None = None
    finish_reason: str | None = None  # "stop", "length", "repetition", ...
    truncated: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    attempts: int = 1
    # The engine's server could not be reached (after its own retries): the region is not
    # failed, it waits for the server.
    unavailable: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
