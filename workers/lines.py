"""Text lines found once per page, and what they are used for: each line goes to the layout
region that holds it, and lines that no region holds become text regions of their own, so
text the layout model missed is still read.

Lines are quadrilaterals (four points, clockwise from the top left) in pixels of the
rendered page, as a text-line detector gives them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from workers.engines.types import LayoutRegion
from workers.geometry import Box, box_area, overlap

Quad = tuple[tuple[float, float], ...]

# A line belongs to the region holding at least this share of its box.
MIN_LINE_SHARE = 0.5
# Uncovered lines closer than this many line heights (vertically) form one block.
BLOCK_GAP_LINES = 0.8
# A detected "line" thicker than this share of the page's longer side is not a text line
# (about 130 pt on an A4 page): pattern fills and drawings give detectors such shapes.
MAX_LINE_THICKNESS_SHARE = 0.15
# Label of the regions made from uncovered lines, and the source label that says so.
LINE_REGION_LABEL = "text"
LINE_REGION_SOURCE = "text_line"


@dataclass(frozen=True, slots=True)
class TextLine:
    quad: Quad
    score: float = 1.0

    @property
    def bbox(self) -> Box:
        xs = [p[0] for p in self.quad]
        ys = [p[1] for p in self.quad]
        return (min(xs), min(ys), max(xs), max(ys))


def line_thickness(quad: Quad) -> float:
    """The shorter side of a line's quadrilateral: its height across the text, however
    the line is turned."""
    (x0, y0), (x1, y1), (x2, y2) = quad[:3]
    return min(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, ((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5)


def plausible_lines(
    lines: Sequence[TextLine], page_width: float, page_height: float
) -> list[TextLine]:
    """The lines that can be text: one thicker than MAX_LINE_THICKNESS_SHARE of the page
    would otherwise turn a drawing into a text region, or a picture into text."""
    limit = MAX_LINE_THICKNESS_SHARE * max(page_width, page_height)
    return [line for line in lines if line_thickness(line.quad) <= limit]


def assign_lines(
    lines: Sequence[TextLine], boxes: Sequence[Box], min_share: float = MIN_LINE_SHARE
) -> tuple[list[list[int]], list[int]]:
    """For each box, the indices of the lines it holds; and the lines no box holds.

    A line goes to the box that covers the largest share of its own box, when that share
    is at least `min_share`; ties go to the smaller box (a formula inside a paragraph)."""
    held: list[list[int]] = [[] for _ in boxes]
    loose: list[int] = []
    for i, line in enumerate(lines):
        lb = line.bbox
        area = box_area(lb)
        best, best_key = -1, (0.0, 0.0)
        for j, box in enumerate(boxes):
            share = overlap(lb, box) / area if area > 0 else 0.0
            key = (round(share, 3), -box_area(box))
            if share > 0 and key > best_key:
                best, best_key = j, key
        if best >= 0 and best_key[0] >= min_share:
            held[best].append(i)
        else:
            loose.append(i)
    return held, loose


def line_blocks(lines: Sequence[TextLine], gap_lines: float = BLOCK_GAP_LINES) -> list[list[int]]:
    """Groups lines into blocks: two lines join when they overlap horizontally and the
    vertical gap between them is under `gap_lines` line heights (or they share a row and
    nearly touch). Blocks in top-to-bottom order, lines in each block likewise."""
    n = len(lines)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    boxes = [line.bbox for line in lines]
    for i in range(n):
        a = boxes[i]
        for j in range(i + 1, n):
            b = boxes[j]
            height = min(a[3] - a[1], b[3] - b[1])
            x_overlap = min(a[2], b[2]) - max(a[0], b[0])
            y_gap = max(a[1], b[1]) - min(a[3], b[3])
            y_overlap = -y_gap
            same_row = y_overlap > 0.5 * height and x_overlap > -height
            stacked = x_overlap > 0 and y_gap < gap_lines * height
            if same_row or stacked:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    blocks = [sorted(g, key=lambda i: (boxes[i][1], boxes[i][0])) for g in groups.values()]
    return sorted(blocks, key=lambda g: (min(boxes[i][1] for i in g), min(boxes[i][0] for i in g)))


def regions_for_loose_lines(lines: Sequence[TextLine], loose: Sequence[int]) -> list[LayoutRegion]:
    """One text region per block of lines that no layout region holds."""
    subset = [lines[i] for i in loose]
    regions = []
    for block in line_blocks(subset):
        boxes = [subset[i].bbox for i in block]
        bbox = (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )
        score = sum(subset[i].score for i in block) / len(block)
        regions.append(
            LayoutRegion(
                label=LINE_REGION_LABEL,
                bbox=bbox,
                score=score,
                source_label=LINE_REGION_SOURCE,
            )
        )
    return regions


def line_share(box: Box, lines: Sequence[TextLine]) -> float:
    """Share of the box's area that the lines cover (overlaps between lines counted once
    each: detected lines do not overlap)."""
    area = box_area(box)
    if area <= 0:
        return 0.0
    return min(1.0, sum(overlap(line.bbox, box) for line in lines) / area)


def order_lines(boxes: Sequence[Box], *, columns: bool = False) -> list[list[int]]:
    """Line boxes in reading order, as rows of indices: a box whose vertical centre lies
    within half a row's height of the row's centre joins that row; rows top to bottom, each
    left to right. With `columns`, lines that form text columns inside the one region (a
    layout box spanning two columns of a paper) are read column by column."""
    groups = _column_groups(boxes) if columns else None
    if groups is None:
        return _rows(boxes, range(len(boxes)))
    return [row for group in groups for row in _rows(boxes, group)]


def _rows(boxes: Sequence[Box], indices: Iterable[int]) -> list[list[int]]:
    order = sorted(indices, key=lambda i: ((boxes[i][1] + boxes[i][3]) / 2, boxes[i][0]))
    rows: list[list[int]] = []
    spans: list[tuple[float, float]] = []
    for i in order:
        b = boxes[i]
        centre = (b[1] + b[3]) / 2
        if rows:
            top, bottom = spans[-1]
            if abs(centre - (top + bottom) / 2) < (bottom - top) / 2:
                rows[-1].append(i)
                spans[-1] = (min(top, b[1]), max(bottom, b[3]))
                continue
        rows.append([i])
        spans.append((b[1], b[3]))
    return [sorted(row, key=lambda i: boxes[i][0]) for row in rows]


# Text columns inside one region: at least this many lines each, each column at least this
# share of the region's width (a list of short terms beside their explanations is not two
# columns of text).
MIN_COLUMN_LINES = 3
MIN_COLUMN_WIDTH = 0.3


def _column_groups(boxes: Sequence[Box]) -> list[list[int]] | None:
    """The lines cut into groups read one after another (bands between lines that cross
    the gutter, then column by column inside a band); None when they form no text columns."""
    from workers.reading_order import crosses_gutter, detect_columns

    if len(boxes) < 2 * MIN_COLUMN_LINES:
        return None
    left = min(b[0] for b in boxes)
    width = max(b[2] for b in boxes) - left
    columns = detect_columns(boxes, width, min_gutter=0.02)
    if len(columns) < 2 or any(b - a < MIN_COLUMN_WIDTH * width for a, b in columns):
        return None

    def column_of(box: Box) -> int:
        centre = (box[0] + box[2]) / 2
        return min(
            range(len(columns)),
            key=lambda c: (
                0
                if columns[c][0] <= centre <= columns[c][1]
                else min(abs(centre - columns[c][0]), abs(centre - columns[c][1]))
            ),
        )

    spanning = sorted(
        (i for i in range(len(boxes)) if crosses_gutter(boxes[i], columns)),
        key=lambda i: boxes[i][1],
    )
    rest = [i for i in range(len(boxes)) if i not in set(spanning)]
    for c in range(len(columns)):
        if sum(1 for i in rest if column_of(boxes[i]) == c) < MIN_COLUMN_LINES:
            return None
    groups: list[list[int]] = []

    def flush(band: list[int]) -> None:
        for c in range(len(columns)):
            group = [i for i in band if column_of(boxes[i]) == c]
            if group:
                groups.append(group)

    for s in spanning:
        centre = (boxes[s][1] + boxes[s][3]) / 2
        band = [i for i in rest if (boxes[i][1] + boxes[i][3]) / 2 < centre]
        rest = [i for i in rest if i not in set(band)]
        flush(band)
        groups.append([s])
    flush(rest)
    return groups


def place_lines(
    found: Sequence[LayoutRegion],
    lines: Sequence[TextLine],
    page_width: float,
    page_height: float,
    *,
    first_page: bool,
) -> tuple[list[LayoutRegion], list[list[TextLine]]]:
    """The page's regions in reading order, with text regions added for the lines that no
    layout region holds; and the lines each region holds, in the regions' order.

    A loose line on a row of a region's lines, just beside them (a line number in the
    margin, a word the layout box cut off), joins that region's row instead. Each region's
    box grows to hold its lines whole. Lines that cannot be text are left out."""
    from workers.reading_order import arrange_page

    lines = plausible_lines(lines, page_width, page_height)
    regions = arrange_page(found, page_width, page_height, first_page=first_page)
    held, loose = assign_lines(lines, [r.bbox for r in regions])
    loose = _join_rows(lines, regions, held, loose)
    if loose:
        extra = regions_for_loose_lines(lines, loose)
        regions = arrange_page([*found, *extra], page_width, page_height, first_page=first_page)
        held, loose = assign_lines(lines, [r.bbox for r in regions])
        _join_rows(lines, regions, held, loose)
    out = []
    for region, indices in zip(regions, held, strict=True):
        box = _union([region.bbox, *(lines[i].bbox for i in indices)])
        out.append(region if box == region.bbox else dataclasses.replace(region, bbox=box))
    return out, [[lines[i] for i in indices] for indices in held]


# Labels whose regions take no loose line beside them: what they hold is dropped or kept
# as an image, and a line beside a running head is not part of it.
_NO_ROW_JOIN = frozenset(
    {"header", "footer", "number", "header_image", "footer_image", "image", "chart", "seal"}
)
# A loose line joins a row when the gap to it is at most this many line heights.
ROW_JOIN_GAP_LINES = 3.0


def _join_rows(
    lines: Sequence[TextLine],
    regions: Sequence[LayoutRegion],
    held: list[list[int]],
    loose: Sequence[int],
) -> list[int]:
    """Moves each loose line that sits on a row of a region's lines, within
    ROW_JOIN_GAP_LINES of them, into that region's lines; returns the lines still loose."""
    still = []
    for i in loose:
        a = lines[i].bbox
        best, best_gap = -1, float("inf")
        for r, indices in enumerate(held):
            if regions[r].label in _NO_ROW_JOIN:
                continue
            for j in indices:
                b = lines[j].bbox
                height = min(a[3] - a[1], b[3] - b[1])
                overlap = min(a[3], b[3]) - max(a[1], b[1])
                gap = max(a[0], b[0]) - min(a[2], b[2])
                on_row = overlap > 0.5 * height and gap <= ROW_JOIN_GAP_LINES * height
                if on_row and gap < best_gap:
                    best, best_gap = r, gap
        if best >= 0:
            held[best].append(i)
        else:
            still.append(i)
    return still


def _union(boxes: Sequence[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
