"""workers.assemble: a job's regions in reading order to markdown and JSON."""

from __future__ import annotations

import re

import pytest

from app.storage import relink_images
from workers.assemble import (
    AssemblyPage,
    AssemblyRegion,
    bbox_norm,
    document_json,
    document_markdown,
)


def region(
    index: int,
    label: str,
    content: str | None,
    task: str = "text",
    bbox: list[float] | None = None,
    **extra: object,
) -> AssemblyRegion:
    return AssemblyRegion(
        index=index,
        label=label,
        task=task,
        bbox=bbox or [10.0, 10.0 + index * 50, 500.0, 50.0 + index * 50],
        content=content,
        source="ocr"
        if task not in ("skip", "abandon")
        else ("image" if task == "skip" else "none"),
        engine="test-engine",
        **extra,  # type: ignore[arg-type]
    )


def page(number: int, *regions: AssemblyRegion, **extra: object) -> AssemblyPage:
    return AssemblyPage(
        number=number,
        width=1000,
        height=2000,
        state="succeeded",
        regions=list(regions),
        **extra,  # type: ignore[arg-type]
    )


def blocks(markdown: str) -> list[str]:
    """The markdown's blocks without the page markers."""
    return [b for b in markdown.strip().split("\n\n") if not b.startswith("<!-- page")]


def test_titles_become_headings_and_text_stays_a_paragraph() -> None:
    markdown = document_markdown(
        [
            page(
                1,
                region(0, "doc_title", "River Levels"),
                region(1, "paragraph_title", "Method"),
                region(2, "text", "We measured the water."),
            )
        ]
    )
    assert blocks(markdown) == ["# River Levels", "## Method", "We measured the water."]
    assert markdown.endswith("\n") and not markdown.endswith("\n\n")


def test_formula_is_display_math_tagged_with_its_adjacent_number() -> None:
    markdown = document_markdown(
        [
            page(
                1,
                region(0, "text", "Energy is"),
                region(1, "display_formula", "$$E = mc^2$$", task="formula"),
                region(2, "formula_number", "(3)"),
                region(3, "display_formula", "a^2 + b^2 = c^2", task="formula"),
            )
        ]
    )
    assert blocks(markdown) == [
        "Energy is",
        "$$\nE = mc^2 \\tag{3}\n$$",
        "$$\na^2 + b^2 = c^2\n$$",
    ]
    # The number is printed only as the tag, not as its own paragraph.
    assert "(3)" not in markdown


def test_formula_number_before_its_formula_and_existing_tag_kept() -> None:
    markdown = document_markdown(
        [
            page(
                1,
                region(0, "formula_number", "[7]"),
                region(1, "display_formula", "x = 1", task="formula"),
                region(2, "display_formula", "y = 2 \\tag{9}", task="formula"),
                region(3, "formula_number", "(10)"),
            )
        ]
    )
    assert blocks(markdown) == ["$$\nx = 1 \\tag{7}\n$$", "$$\ny = 2 \\tag{9}\n$$"]


def test_tables_are_kept_or_marked() -> None:
    html = "<table><tr><td>1</td></tr></table>"
    markdown = document_markdown(
        [
            page(
                1,
                region(0, "table", html, task="table"),
                region(1, "table", "| a | b |\n|---|---|\n| 1 | 2 |", task="table"),
                region(2, "table", "Year  Level\n\n2020  4.5\n", task="table"),
            )
        ]
    )
    assert blocks(markdown) == [
        html,
        "| a | b |\n|---|---|\n| 1 | 2 |",
        "<!-- table -->\nYear  Level\n2020  4.5",
    ]


def test_skipped_images_are_linked_and_abandoned_regions_only_in_json() -> None:
    pages = [
        page(
            1,
            region(0, "header", "RUNNING HEADER", task="abandon"),
            region(1, "image", None, task="skip", image="images/page-00001-region-0001.png"),
            region(2, "chart", None, task="skip"),  # no crop kept: nothing to link
            region(3, "text", "Body text."),
            region(4, "footer", "Page 1 of 9", task="abandon"),
        )
    ]
    markdown = document_markdown(pages)
    assert blocks(markdown) == ["![image](images/page-00001-region-0001.png)", "Body text."]
    assert "RUNNING HEADER" not in markdown and "Page 1 of 9" not in markdown
    assert relink_images(markdown, "report.images").count("](report.images/page-00001") == 1

    document = document_json(job_id="j1", filename="f.pdf", pages=pages)
    regions = document["pages"][0]["regions"]
    assert [r["index"] for r in regions] == [0, 1, 2, 3, 4]
    assert regions[0]["content"] == "RUNNING HEADER" and regions[0]["task"] == "abandon"
    assert regions[4]["content"] == "Page 1 of 9"
    assert regions[1]["image"] == "images/page-00001-region-0001.png"
    assert "image" not in regions[2]


def test_hyphenated_words_are_rejoined_across_lines_and_regions() -> None:
    markdown = document_markdown(
        [
            page(
                1,
                region(0, "text", "The engi-\nneers opened the spill-"),
                region(1, "text", "way on the ninth day.\nThe North-\nGauge rose."),
            )
        ]
    )
    assert blocks(markdown) == [
        "The engineers opened the spillway on the ninth day. The North- Gauge rose."
    ]


def test_hyphen_not_rejoined_into_a_heading_or_before_a_capital() -> None:
    markdown = document_markdown(
        [
            page(
                1,
                region(0, "text", "A well-"),
                region(1, "paragraph_title", "known title"),
                region(2, "text", "Self-"),
                region(3, "text", "Contained."),
            )
        ]
    )
    assert blocks(markdown) == ["A well-", "## known title", "Self-", "Contained."]


def test_pages_are_marked_and_failed_pages_explained() -> None:
    pages = [
        page(1, region(0, "text", "First page.")),
        AssemblyPage(
            number=2, width=None, height=None, state="failed", error="render failed -- bad\nobj"
        ),
        page(3, region(0, "text", "third page starts lower-case.")),
    ]
    markdown = document_markdown(pages)
    assert markdown.rstrip("\n").split("\n\n") == [
        "<!-- page 1 -->",
        "First page.",
        "<!-- page 2 -->",
        "<!-- page 2 failed: render failed — bad obj -->",
        "<!-- page 3 -->",
        "third page starts lower-case.",
    ]
    document = document_json(job_id="j", filename="f.pdf", pages=pages)
    assert document["pages_failed"] == 1
    assert [p["page"] for p in document["pages"]] == [1, 2, 3]
    assert document["pages"][1]["error"].startswith("render failed")


def test_empty_regions_are_dropped() -> None:
    markdown = document_markdown(
        [page(1, region(0, "text", "  \n "), region(1, "text", None), region(2, "text", "x"))]
    )
    assert blocks(markdown) == ["x"]


@pytest.mark.parametrize(
    ("bbox", "width", "height", "expected"),
    [
        ([0, 0, 1000, 2000], 1000, 2000, [0, 0, 1000, 1000]),
        ([250, 500, 750, 1500], 1000, 2000, [250, 250, 750, 750]),
        ([1, 1, 2, 2], 3, 3, [333, 333, 667, 667]),  # rounded, not truncated
        ([-20, -5, 1200, 2100], 1000, 2000, [0, 0, 1000, 1000]),  # clamped to the page
        ([10, 10, 20, 20], None, 2000, [0, 0, 0, 0]),
        ([10, 10, 20, 20], 1000, 0, [0, 0, 0, 0]),
    ],
)
def test_bbox_norm(
    bbox: list[float], width: int | None, height: int | None, expected: list[int]
) -> None:
    assert bbox_norm(bbox, width, height) == expected


def test_json_region_fields() -> None:
    r = region(
        0,
        "text",
        "Hello",
        bbox=[100.04, 200.06, 900.0, 400.0],
        score=0.987654,
        polygon=[[1, 2], [3, 4]],
        error="retried once",
        truncated=True,
    )
    document = document_json(job_id="job-1", filename="a.pdf", pages=[page(1, r, dpi=200.0)])
    assert document["job_id"] == "job-1" and document["filename"] == "a.pdf"
    (out,) = document["pages"][0]["regions"]
    assert out == {
        "index": 0,
        "label": "text",
        "source_label": None,
        "task": "text",
        "bbox": [100.0, 200.1, 900.0, 400.0],
        "bbox_norm": [100, 100, 900, 200],
        "content": "Hello",
        "source": "ocr",
        "engine": "test-engine",
        "score": 0.9877,
        "state": "done",
        "polygon": [[1, 2], [3, 4]],
        "error": "retried once",
        "truncated": True,
    }
    assert document["pages"][0]["dpi"] == 200.0


def test_each_page_carries_its_own_markdown() -> None:
    """The JSON's per-page markdown (what the web page shows beside the page image) is the
    document's markdown between that page's markers, and a page with nothing to read has
    none."""
    pages = [
        page(1, region(0, "doc_title", "Annual report"), region(1, "text", "It rained a lot.")),
        page(2, region(0, "header", "running head", task="abandon")),
        page(3, region(0, "text", "It kept rain-"), region(1, "text", "ing in May.")),
    ]
    markdown = document_markdown(pages)
    document = document_json(job_id="j", filename="f.pdf", pages=pages)
    per_page = [p["markdown"] for p in document["pages"]]
    assert per_page == ["# Annual report\n\nIt rained a lot.\n", "", "It kept raining in May.\n"]
    between_markers = [part.strip() for part in re.split(r"<!-- page \d+ -->", markdown)[1:]]
    assert [p.strip() for p in per_page] == between_markers
