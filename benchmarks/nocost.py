"""Engines that cost nothing, for measuring the control plane alone: layout answers a fixed
number of text regions, recognition answers at once. Only `python -m benchmarks.worker`
installs them (workers.engines.registry.install); no setting can select them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workers.engines.types import LayoutRegion, RecognitionRequest, RecognitionResult


class NoCostLayout:
    """`regions` text regions stacked down the page, one per band."""

    name = "nocost"
    version = "1"

    def __init__(self, regions: int) -> None:
        self.regions = regions

    def detect(self, image: np.ndarray) -> list[LayoutRegion]:
        height, width = image.shape[:2]
        band = 0.9 * height / max(1, self.regions)
        return [
            LayoutRegion(
                label="text",
                bbox=(
                    0.1 * width,
                    0.05 * height + i * band,
                    0.9 * width,
                    0.05 * height + (i + 0.8) * band,
                ),
                score=1.0,
                order=i,
            )
            for i in range(self.regions)
        ]

    def warmup(self) -> None:
        pass

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        pass


class NoCostRecognizer:
    """Answers every request at once with a short fixed text."""

    name = "nocost"
    version = "1"

    def recognize(self, requests: Sequence[RecognitionRequest]) -> list[RecognitionResult]:
        return [RecognitionResult(key=r.key, content=f"region {r.key}") for r in requests]

    def warmup(self) -> RecognitionResult:
        return RecognitionResult(key="warmup", content="")

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        pass
