"""Assembly: a job's pages and regions, in reading order, to markdown and JSON.

Plain functions over plain values; the assemble task loads the rows and stores the output.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class AssemblyRegion:
    index: int
    label: str
    task: str
    bbox: list[float]
    content: str | None
    source: str | None
    engine: str | None
    state: str = "done"
    score: float | None = None
    polygon: list[Any] | None = None
    image: str | None = None  # kept crop, relative to document.md (images/...)
    error: str | None = None
    finish_reason: str | None = None
    truncated: bool = False
    source_label: str | None = None  # the layout engine's own label, before mapping
    note: str | None = None  # why it was routed against its label


@dataclass(slots=True)
class AssemblyPage:
    number: int
    width: int | None
    height: int | None
    state: str
    dpi: float | None = None
    error: str | None = None
    text_layer: str | None = None
    regions: list[AssemblyRegion] = field(default_factory=list)


def bbox_norm(bbox: Sequence[float], width: int | None, height: int | None) -> list[int]:
    """The box on a 0–1000 grid of the page, as GLM-OCR and most layout tools report it."""
    if not width or not height:
        return [0, 0, 0, 0]
    x0, y0, x1, y1 = bbox
    return [
        _clamp(round(x0 * 1000 / width)),
        _clamp(round(y0 * 1000 / height)),
        _clamp(round(x1 * 1000 / width)),
        _clamp(round(y1 * 1000 / height)),
    ]


def _clamp(value: int) -> int:
    return max(0, min(1000, value))


def document_json(*, job_id: str, filename: str, pages: Sequence[AssemblyPage]) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "filename": filename,
        "pages_failed": sum(1 for page in pages if page.state == "failed"),
        "pages": [
            {
                "page": page.number,
                "width": page.width,
                "height": page.height,
                "dpi": page.dpi,
                "state": page.state,
                "error": page.error,
                "text_layer": page.text_layer,
                "markdown": page_markdown(page),
                "regions": [_region_json(region, page) for region in page.regions],
            }
            for page in pages
        ],
    }


def _region_json(region: AssemblyRegion, page: AssemblyPage) -> dict[str, Any]:
    data: dict[str, Any] = {
        "index": region.index,
        "label": region.label,
        "source_label": region.source_label,
        "task": region.task,
        "bbox": [round(v, 1) for v in region.bbox],
        "bbox_norm": bbox_norm(region.bbox, page.width, page.height),
        "content": region.content,
        "source": region.source,
        "engine": region.engine,
        "score": None if region.score is None else round(region.score, 4),
        "state": region.state,
    }
    if region.polygon:
        data["polygon"] = region.polygon
    if region.image:
        data["image"] = region.image
    if region.error:
        data["error"] = region.error
    if region.truncated:
        data["truncated"] = True
    if region.note:
        data["note"] = region.note
    return data


# -- markdown --------------------------------------------------------------------------

_HEADINGS = {"doc_title": "# ", "paragraph_title": "## "}
_HYPHEN_END = re.compile(r"(\w)-$")


def document_markdown(pages: Sequence[AssemblyPage]) -> str:
    """Markdown in reading order: headings for titles, $$…$$ for formulas (numbers as
    \\tag{}), tables as the recognizer gave them, kept images linked, page breaks marked,
    words hyphenated across region or line breaks re-joined."""
    blocks: list[str] = []
    for page in pages:
        blocks.append(f"<!-- page {page.number} -->")
        if page.error:
            blocks.append(f"<!-- page {page.number} failed: {_comment_safe(page.error)} -->")
        blocks.extend(_page_blocks(page))
    return _join_blocks(blocks)


def page_markdown(page: AssemblyPage) -> str:
    """One page's markdown, as document_markdown writes it between its page markers (no
    word is re-joined across pages: a marker stands between them)."""
    blocks = _page_blocks(page)
    return _join_blocks(blocks) if blocks else ""


def _page_blocks(page: AssemblyPage) -> list[str]:
    blocks: list[str] = []
    regions = [r for r in page.regions if r.task != "abandon"]
    numbers = _formula_numbers(regions)
    for position, region in enumerate(regions):
        if position in numbers.values():
            continue  # printed as the \tag of its formula
        if region.task == "skip":
            if region.image:
                blocks.append(f"![{region.label}]({region.image})")
            continue
        text = (region.content or "").strip()
        if not text:
            continue
        if region.task == "formula":
            tag_position = numbers.get(position)
            tag = regions[tag_position].content if tag_position is not None else None
            blocks.append(_formula_block(text, tag))
        elif region.task == "table":
            blocks.append(text if text.lstrip().startswith(("<table", "|")) else _table_block(text))
        else:
            prefix = _HEADINGS.get(region.label, "")
            body = _unwrap_lines(text)
            blocks.append(prefix + body if prefix else body)
    return blocks


def _formula_numbers(regions: Sequence[AssemblyRegion]) -> dict[int, int]:
    """Maps each formula's position to the formula_number region beside it, if any."""
    pairs: dict[int, int] = {}
    for position, region in enumerate(regions):
        if region.label != "formula_number" or not (region.content or "").strip():
            continue
        for neighbour in (position - 1, position + 1):
            in_page = 0 <= neighbour < len(regions)
            if in_page and regions[neighbour].task == "formula" and neighbour not in pairs:
                pairs[neighbour] = position
                break
    return pairs


def _formula_block(latex: str, tag: str | None) -> str:
    body = latex.strip()
    if body.startswith("$$") and body.endswith("$$") and len(body) >= 4:
        body = body[2:-2].strip()
    if tag:
        number = tag.strip().strip("()[]").strip()
        if number and "\\tag" not in body:
            body = f"{body} \\tag{{{number}}}"
    return f"$$\n{body}\n$$"


def _table_block(text: str) -> str:
    # Line-level recognizers give a table's cells as lines; keep them, marked as a table.
    return "<!-- table -->\n" + "\n".join(line for line in text.splitlines() if line.strip())


def _unwrap_lines(text: str) -> str:
    """One paragraph per region: soft line breaks become spaces, hyphens at a line end
    followed by a lower-case word are re-joined."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    out = ""
    for line in lines:
        if not out:
            out = line
        elif _HYPHEN_END.search(out) and line[:1].islower():
            out = out[:-1] + line
        else:
            out = f"{out} {line}"
    return out


def _join_blocks(blocks: list[str]) -> str:
    """Joins blocks with blank lines, re-joining a word hyphenated across two text blocks."""
    merged: list[str] = []
    for block in blocks:
        previous = merged[-1] if merged else ""
        if (
            previous
            and _is_prose(previous)
            and _is_prose(block)
            and _HYPHEN_END.search(previous)
            and block[:1].islower()
        ):
            merged[-1] = previous[:-1] + block
        else:
            merged.append(block)
    return "\n\n".join(merged).strip() + "\n"


def _is_prose(block: str) -> bool:
    return not block.startswith(("#", "$$", "<", "!", "|"))


def _comment_safe(text: str) -> str:
    return text.replace("--", "—").replace("\n", " ")[:500]
