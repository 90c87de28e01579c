"""Axis-aligned boxes in page pixels, as layout, text lines and reading order share them."""

from __future__ import annotations

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def box_area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def overlap(a: Box, b: Box) -> float:
    """The area the two boxes share."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0
