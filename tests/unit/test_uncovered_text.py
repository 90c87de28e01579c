"""No text is dropped for lack of a layout region: text lines found on the whole page that
no region holds become text regions in reading order (real detection and recognition
models, on generated and on real pages)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.corpus import CORPUS
from tests.support.documents import SAMPLE_PARAGRAPHS, SAMPLE_TITLE, page_image
from tests.support.text_share import text_share_in
from workers.assemble import AssemblyPage, AssemblyRegion, document_markdown
from workers.crops import crop_with_lines
from workers.documents import PDF, render_page
from workers.engines.layout_rapid import RapidLayoutEngine
from workers.engines.lines_rapidocr import RapidOcrLineDetector
from workers.engines.recognize_rapidocr import RapidOcrRecognizer
from workers.engines.types import LayoutRegion, RecognitionRequest, RecognitionTask
from workers.labels import route_region, routing_table
from workers.lines import LINE_REGION_SOURCE, line_share, place_lines
from workers.reading_order import arrange_page


@pytest.fixture(scope="module")
def detector() -> RapidOcrLineDetector:
    return RapidOcrLineDetector(threads=1)


def _markdown(image: np.ndarray, found: list[LayoutRegion], detector: RapidOcrLineDetector) -> str:
    """The page's markdown as the page and recognize tasks make it, in `ocr` mode."""
    height, width = image.shape[:2]
    regions, held = place_lines(found, detector.detect(image), width, height, first_page=False)
    routes = routing_table()
    tasks, requests = [], []
    for index, region in enumerate(regions):
        share = line_share(region.bbox, held[index])
        task = route_region(region, routes, width, height, share).task
        tasks.append(task)
        if task in (RecognitionTask.TEXT, RecognitionTask.TABLE, RecognitionTask.FORMULA):
            quads = [line.quad for line in held[index]]
            crop, lines = crop_with_lines(image, region.bbox, quads, 8)
            requests.append(RecognitionRequest(str(index), crop, task, lines=lines))
    results = {r.key: r for r in RapidOcrRecognizer(threads=1).recognize(requests)}
    page = AssemblyPage(number=1, width=width, height=height, state="done")
    for index, region in enumerate(regions):
        result = results.get(str(index))
        page.regions.append(
            AssemblyRegion(
                index=index,
                label=region.label,
                task=tasks[index].value,
                bbox=list(region.bbox),
                content=result.content if result else None,
                source="ocr",
                engine="rapidocr",
                source_label=region.source_label,
            )
        )
    return document_markdown([page])


def test_paragraphs_no_layout_region_covers_are_read_in_order(
    detector: RapidOcrLineDetector,
) -> None:
    """A layout that found only the title: the paragraphs below it still come out, after
    the title and in their order."""
    image = np.ascontiguousarray(np.asarray(page_image(SAMPLE_TITLE, SAMPLE_PARAGRAPHS))[..., ::-1])
    title_only = [LayoutRegion("paragraph_title", (180.0, 180.0, 1400.0, 260.0), 0.9)]
    markdown = _markdown(image, title_only, detector)
    positions = [markdown.find(word) for word in ("River", "northern", "Rainfall", "spillway")]
    assert all(p >= 0 for p in positions), markdown
    assert positions == sorted(positions), markdown
    assert "gauge recorded a steady rise" in markdown


def test_a_page_without_any_layout_region_is_still_read(detector: RapidOcrLineDetector) -> None:
    image = np.ascontiguousarray(np.asarray(page_image(None, SAMPLE_PARAGRAPHS[:2]))[..., ::-1])
    markdown = _markdown(image, [], detector)
    assert "northern gauge" in markdown and "upper valley" in markdown, markdown


def _uncovered_share(pdf: Path, regions: list[LayoutRegion], scale: float) -> float:
    """Share of the page's text-layer characters whose centre lies in no region."""
    return 1.0 - text_share_in(pdf, [region.bbox for region in regions], scale)


def test_real_pages_leave_almost_no_text_outside_every_region(
    detector: RapidOcrLineDetector,
) -> None:
    """On every corpus page, the layout model alone leaves up to ~7% of the characters in
    no region (d15); with the page's text lines placed, at most 1% (stray symbols the line
    detector does not see as text)."""
    layout = RapidLayoutEngine(threads=1)
    pages = sorted((CORPUS / "pages").glob("*.pdf"))
    assert len(pages) >= 10
    before, after, made = {}, {}, 0
    for pdf in pages:
        rendered = render_page(pdf, PDF, 1, 200, 40_000_000)
        height, width = rendered.image.shape[:2]
        found = layout.detect(rendered.image)
        alone = arrange_page(found, width, height, first_page=False)
        placed, _ = place_lines(
            found, detector.detect(rendered.image), width, height, first_page=False
        )
        made += sum(1 for r in placed if r.source_label == LINE_REGION_SOURCE)
        before[pdf.stem] = _uncovered_share(pdf, alone, rendered.scale)
        after[pdf.stem] = _uncovered_share(pdf, placed, rendered.scale)
    assert max(before.values()) > 0.03, before  # the corpus does exercise the gap
    assert made > 0
    assert max(after.values()) <= 0.01, after
