from workers.engines.types import LayoutRegion
from workers.reading_order import (
    detect_columns,
    has_model_order,
    iou,
    order_regions,
    refine_titles,
    suppress_duplicates,
)

W, H = 1700.0, 2200.0  # a US-letter page at 200 dpi


def R(name: str, box: tuple[float, float, float, float], label: str = "text", **kw) -> LayoutRegion:
    # The source_label carries a name so tests can read the order back.
    return LayoutRegion(label=label, bbox=box, score=kw.pop("score", 0.9), source_label=name, **kw)


def names(regions: list[LayoutRegion]) -> list[str | None]:
    return [r.source_label for r in regions]


def test_single_column_top_to_bottom() -> None:
    regions = [
        R("p3", (150, 1200, 1550, 1500)),
        R("p1", (150, 200, 1550, 500)),
        R("p2", (150, 600, 1550, 1100)),
    ]
    assert names(order_regions(regions, W, H)) == ["p1", "p2", "p3"]


def test_two_columns_left_then_right() -> None:
    regions = [
        R("r1", (880, 200, 1550, 700)),
        R("l2", (150, 750, 820, 1400)),
        R("r2", (880, 750, 1550, 1400)),
        R("l1", (150, 200, 820, 700)),
        R("l3", (150, 1450, 820, 2000)),
    ]
    assert names(order_regions(regions, W, H)) == ["l1", "l2", "l3", "r1", "r2"]


def test_two_columns_with_full_width_title_and_figure() -> None:
    regions = [
        R("fig", (200, 1000, 1500, 1400), label="image"),
        R("title", (300, 100, 1400, 180), label="doc_title"),
        R("a_r1", (880, 250, 1550, 600)),
        R("a_l1", (150, 250, 820, 600)),
        R("a_l2", (150, 650, 820, 950)),
        R("a_r2", (880, 650, 1550, 950)),
        R("b_r1", (880, 1450, 1550, 2000)),
        R("b_l1", (150, 1450, 820, 2000)),
        R("header", (150, 30, 1550, 70), label="header"),
        R("footer", (800, 2100, 900, 2150), label="footer"),
    ]
    assert names(order_regions(regions, W, H)) == [
        "header",
        "title",
        "a_l1",
        "a_l2",
        "a_r1",
        "a_r2",
        "fig",
        "b_l1",
        "b_r1",
        "footer",
    ]


def test_narrow_figure_in_single_column_stays_in_place() -> None:
    regions = [
        R("p1", (150, 200, 1550, 500)),
        R("fig", (600, 550, 1100, 900), label="image"),
        R("cap", (500, 920, 1200, 980), label="figure_title"),
        R("p2", (150, 1000, 1550, 1300)),
    ]
    assert names(order_regions(regions, W, H)) == ["p1", "fig", "cap", "p2"]


def test_detect_columns() -> None:
    boxes = [(150, 0, 820, 10), (880, 0, 1550, 10), (160, 20, 800, 30), (300, 40, 1400, 50)]
    cols = detect_columns(boxes, W)
    assert cols == [(150, 820), (880, 1550)]
    assert detect_columns([(150, 0, 1550, 10)], W) == [(150, 1550)]


def test_model_order_is_used() -> None:
    regions = [
        R("c", (150, 200, 820, 700), order=3),
        R("a", (880, 200, 1550, 700), order=1),
        R("b", (150, 750, 820, 1400), order=2),
    ]
    assert has_model_order(regions)
    assert names(order_regions(regions, W, H)) == ["a", "b", "c"]


def test_none_orders_are_placed_by_label_and_position() -> None:
    regions = [
        R("foot", (150, 2100, 1550, 2150), label="footer"),
        R("t2", (150, 800, 1550, 1200), order=2),
        R("num_bottom", (820, 2160, 880, 2190), label="number"),
        R("t1", (150, 200, 1550, 700), order=1),
        R("head", (150, 30, 1550, 70), label="header"),
        R("fnum", (1500, 1250, 1550, 1300), label="formula_number"),
        R("eq", (500, 1240, 1200, 1310), label="display_formula", order=3),
        R("t3", (150, 1400, 1550, 1900), order=4),
    ]
    assert names(order_regions(regions, W, H)) == [
        "head",
        "t1",
        "t2",
        "eq",
        "fnum",
        "t3",
        "foot",
        "num_bottom",
    ]


def test_in_flow_region_without_order_falls_back_to_geometry() -> None:
    regions = [
        R("r1", (880, 200, 1550, 700), order=1),
        R("l1", (150, 200, 820, 700), order=None),  # text without order: no model order
        R("l2", (150, 750, 820, 1400), order=2),
    ]
    assert not has_model_order(regions)
    assert names(order_regions(regions, W, H)) == ["l1", "l2", "r1"]


def test_all_none_orders_use_geometry() -> None:
    regions = [R("b", (150, 800, 1550, 900)), R("a", (150, 100, 1550, 200))]
    assert not has_model_order(regions)
    assert names(order_regions(regions, W, H)) == ["a", "b"]


def test_empty() -> None:
    assert order_regions([], W, H) == []


def test_suppress_duplicates_keeps_higher_score() -> None:
    regions = [
        R("low", (100, 100, 500, 300), score=0.5),
        R("high", (105, 102, 505, 305), label="paragraph_title", score=0.8),
        R("other", (100, 400, 500, 600), score=0.4),
    ]
    assert names(suppress_duplicates(regions)) == ["high", "other"]


def test_suppress_duplicates_nested_same_label_only() -> None:
    regions = [
        R("big", (100, 100, 900, 900), score=0.9),
        R("part", (120, 120, 400, 300), score=0.6),
        R("formula", (200, 400, 600, 450), label="display_formula", score=0.5),
    ]
    out = suppress_duplicates(regions)
    assert names(out) == ["big", "formula"]
    assert out[0].bbox == (100, 100, 900, 900)


def test_suppress_duplicates_merges_fragment_into_union() -> None:
    regions = [
        R("fragment", (160, 1792, 231, 1813), label="paragraph_title", score=0.7),
        R("whole", (159, 1790, 305, 1813), label="paragraph_title", score=0.4),
    ]
    out = suppress_duplicates(regions)
    assert names(out) == ["fragment"]
    assert out[0].bbox == (159, 1790, 305, 1813)
    assert out[0].score == 0.7


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_refine_titles_promotes_tallest_top_title_on_first_page() -> None:
    regions = [
        R("section", (150, 500, 800, 540), label="paragraph_title"),
        R("title", (300, 120, 1400, 220), label="paragraph_title"),
        R("late", (150, 1500, 800, 1540), label="paragraph_title"),
        R("p", (150, 600, 800, 900)),
    ]
    out = refine_titles(regions, H, first_page=True)
    assert [r.label for r in out] == ["paragraph_title", "doc_title", "paragraph_title", "text"]
    assert refine_titles(regions, H, first_page=False) == regions


def test_refine_titles_ties_go_to_the_topmost_and_existing_doc_title_wins() -> None:
    regions = [
        R("second", (150, 400, 800, 450), label="paragraph_title"),
        R("first", (150, 150, 800, 198), label="paragraph_title"),
    ]
    out = refine_titles(regions, H, first_page=True)
    assert [r.label for r in out] == ["paragraph_title", "doc_title"]
    already = [R("dt", (150, 100, 800, 150), label="doc_title"), *regions]
    assert refine_titles(already, H, first_page=True) == already


def test_refine_titles_ignores_titles_low_on_the_page() -> None:
    regions = [R("t", (150, 1200, 800, 1300), label="paragraph_title")]
    assert refine_titles(regions, H, first_page=True) == regions


def test_narrow_title_over_the_gutter_does_not_hide_the_columns() -> None:
    # A centred title narrower than half the body still spans the gutter of a two-column page.
    regions = [
        R("title", (550, 150, 1100, 230), label="paragraph_title"),
        R("r1", (880, 300, 1550, 1000)),
        R("l1", (150, 300, 820, 1000)),
        R("l2", (150, 1050, 820, 2000)),
        R("r2", (880, 1050, 1550, 2000)),
    ]
    assert names(order_regions(regions, W, H)) == ["title", "l1", "l2", "r1", "r2"]


def test_regions_nested_in_a_table_or_figure_are_not_read_twice() -> None:
    from workers.engines.types import LayoutRegion
    from workers.reading_order import suppress_duplicates

    table = LayoutRegion("table", (100, 100, 900, 600), 0.9)
    inner_text = LayoutRegion("text", (120, 120, 880, 300), 0.95)
    figure = LayoutRegion("image", (100, 700, 900, 1000), 0.8)
    figure_label = LayoutRegion("text", (150, 750, 300, 780), 0.7)
    outside = LayoutRegion("text", (100, 1100, 900, 1300), 0.9)
    kept = suppress_duplicates([table, inner_text, figure, figure_label, outside])
    assert kept == [table, figure, outside]
