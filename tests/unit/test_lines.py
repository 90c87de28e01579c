"""workers.lines: text lines assigned to the regions that hold them, lines outside every
region made into text regions in reading order, and lines read column by column."""

from __future__ import annotations

from workers.engines.types import LayoutRegion
from workers.lines import (
    LINE_REGION_SOURCE,
    TextLine,
    assign_lines,
    line_blocks,
    line_share,
    line_thickness,
    order_lines,
    place_lines,
    plausible_lines,
    regions_for_loose_lines,
)


def _line(x0: float, y0: float, x1: float, y1: float) -> TextLine:
    return TextLine(quad=((x0, y0), (x1, y0), (x1, y1), (x0, y1)), score=0.9)


def _region(label: str, x0: float, y0: float, x1: float, y1: float) -> LayoutRegion:
    return LayoutRegion(label=label, bbox=(x0, y0, x1, y1), score=0.9)


def test_a_line_goes_to_the_region_holding_most_of_it() -> None:
    lines = [_line(100, 100, 500, 130), _line(100, 600, 500, 630), _line(100, 900, 500, 930)]
    boxes = [(90, 90, 510, 300), (90, 580, 300, 650)]
    held, loose = assign_lines(lines, boxes)
    # The second line lies half inside the second box: held, as the share reaches 0.5.
    assert held == [[0], [1]] and loose == [2]


def test_a_line_in_a_nested_box_goes_to_the_smaller_box() -> None:
    lines = [_line(120, 120, 200, 140)]
    held, loose = assign_lines(lines, [(0, 0, 1000, 1000), (100, 100, 300, 200)])
    assert held == [[], [0]] and loose == []


def test_lines_a_region_cuts_in_small_pieces_stay_loose() -> None:
    lines = [_line(100, 100, 500, 130)]
    held, loose = assign_lines(lines, [(400, 90, 600, 140)])  # holds a quarter of it
    assert held == [[]] and loose == [0]


def test_stacked_lines_form_one_block_and_distant_ones_another() -> None:
    lines = [
        _line(100, 100, 600, 130),
        _line(100, 140, 580, 170),  # the next line of the same paragraph
        _line(100, 800, 300, 830),  # far below: a block of its own
    ]
    assert line_blocks(lines) == [[0, 1], [2]]


def test_loose_lines_become_text_regions_marked_as_such() -> None:
    lines = [_line(100, 100, 600, 130), _line(100, 140, 580, 170), _line(900, 1500, 1000, 1530)]
    regions = regions_for_loose_lines(lines, [0, 1, 2])
    assert [r.bbox for r in regions] == [(100, 100, 600, 170), (900, 1500, 1000, 1530)]
    assert all(r.label == "text" and r.source_label == LINE_REGION_SOURCE for r in regions)


def test_place_lines_puts_uncovered_text_in_reading_order() -> None:
    """A paragraph the layout model missed, between two it found, is read between them."""
    found = [_region("text", 100, 100, 1500, 300), _region("text", 100, 700, 1500, 900)]
    lines = [
        _line(110, 110, 1490, 140),
        _line(110, 450, 1400, 480),  # in no region
        _line(110, 490, 900, 520),  # in no region
        _line(110, 710, 1490, 740),
    ]
    regions, held = place_lines(found, lines, 1700, 2200, first_page=False)
    assert [r.bbox[1] for r in regions] == [100, 450, 700]
    assert regions[1].source_label == LINE_REGION_SOURCE
    assert [len(h) for h in held] == [1, 2, 1]


def test_place_lines_without_lines_keeps_the_layout() -> None:
    found = [_region("text", 100, 100, 1500, 300)]
    regions, held = place_lines(found, [], 1700, 2200, first_page=False)
    assert [r.bbox for r in regions] == [found[0].bbox] and held == [[]]


def test_thickness_is_the_short_side_however_the_line_turns() -> None:
    assert line_thickness(_line(100, 100, 500, 130).quad) == 30
    turned = ((0.0, 30.0), (30.0, 0.0), (330.0, 300.0), (300.0, 330.0))
    assert abs(line_thickness(turned) - 30 * 2**0.5) < 1e-9


def test_a_line_as_thick_as_a_drawing_is_not_text() -> None:
    # Seen on a page of dashed strokes: one turned "line" across the whole page, which
    # made the picture holding it read as text.
    across = TextLine(quad=((0.0, 1556.0), (1040.0, 0.0), (1238.0, 839.0), (858.0, 1753.0)))
    title = _line(100, 100, 1100, 250)  # a 150 px line: a large title, still text
    assert plausible_lines([across, title], 1239, 1754) == [title]
    picture = _region("image", 0, 0, 1238, 1753)
    regions, held = place_lines([picture], [across], 1239, 1754, first_page=True)
    assert [r.label for r in regions] == ["image"] and held == [[]]
    assert line_share(regions[0].bbox, held[0]) == 0.0


def test_line_share_is_the_covered_share_of_the_box() -> None:
    box = (0.0, 0.0, 100.0, 100.0)
    assert line_share(box, []) == 0
    assert line_share(box, [_line(0, 0, 100, 25), _line(0, 50, 100, 75)]) == 0.5


def test_rows_read_left_to_right_top_to_bottom() -> None:
    boxes = [(300, 10, 400, 30), (10, 12, 200, 31), (10, 50, 400, 70)]
    assert order_lines(boxes) == [[1, 0], [2]]


def _two_columns(rows: int) -> list[tuple[float, float, float, float]]:
    boxes = []
    for i in range(rows):
        y = 100 + 40 * i
        boxes.append((100.0, y, 780.0, y + 30))  # left column
        boxes.append((820.0, y, 1500.0, y + 30))  # right column
    return boxes


def test_text_columns_in_one_region_are_read_one_after_the_other() -> None:
    boxes = _two_columns(5)
    rows = order_lines(boxes, columns=True)
    assert [i for row in rows for i in row] == [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]
    # Without columns (tables): row by row.
    assert order_lines(boxes) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_a_line_across_the_gutter_separates_bands() -> None:
    boxes = _two_columns(3)
    boxes.append((100.0, 230, 1500, 260))  # a heading across both columns, index 6
    boxes += [(100.0, 280 + 40 * i, 780, 310 + 40 * i) for i in range(3)]  # 7, 8, 9
    boxes += [(820.0, 280 + 40 * i, 1500, 310 + 40 * i) for i in range(3)]  # 10, 11, 12
    order = [i for row in order_lines(boxes, columns=True) for i in row]
    assert order == [0, 2, 4, 1, 3, 5, 6, 7, 8, 9, 10, 11, 12]


def test_short_terms_beside_explanations_are_not_columns() -> None:
    boxes = []
    for i in range(6):
        y = 100 + 40 * i
        boxes.append((100.0, y, 160.0 + 20 * (i % 3), y + 30))  # a short term
        boxes.append((500.0, y, 1500.0, y + 30))  # its explanation
    rows = order_lines(boxes, columns=True)
    assert rows == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]


def test_a_line_number_beside_a_paragraph_joins_its_row() -> None:
    """Margin line numbers (and words a layout box cut off) are read on their row; the
    region's box grows to hold them."""
    found = [_region("text", 140, 100, 1500, 200)]
    lines = [
        _line(150, 110, 1490, 140),
        _line(150, 150, 1490, 180),
        _line(60, 112, 90, 138),  # "224", in the margin, 60 px from the text
        _line(60, 152, 90, 178),  # "225"
    ]
    regions, held = place_lines(found, lines, 1700, 2200, first_page=False)
    assert len(regions) == 1
    assert regions[0].bbox == (60, 100, 1500, 200)
    assert sorted(held[0], key=lambda line: line.bbox) == sorted(lines, key=lambda line: line.bbox)
    rows = order_lines([line.bbox for line in held[0]], columns=True)
    assert [[held[0][i].bbox[0] for i in row] for row in rows] == [[60, 150], [60, 150]]


def test_a_line_beside_a_running_head_is_not_dropped_with_it() -> None:
    found = [_region("header", 700, 100, 1000, 130)]
    lines = [_line(710, 102, 990, 128), _line(1100, 102, 1140, 128)]  # the head, a page number
    regions, held = place_lines(found, lines, 1700, 2200, first_page=False)
    assert [r.label for r in regions] == ["header", "text"]
    assert [len(h) for h in held] == [1, 1]
