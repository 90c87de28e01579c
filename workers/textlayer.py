"""The born-digital text layer: each layout region's text straight from the PDF, with a
trust check that says when OCR must be used instead.

Region boxes are in pixels of the page as rendered by pypdfium2 at `scale` (pixels per PDF
point, no extra rotation). They are mapped to PDF user space with pdfium's own
device-to-page transform, which accounts for the page's /Rotate and crop box, so the same
boxes work on rotated and cropped pages.

The trust check, exactly:

Page level (`status`):
  * `absent`    — the page has no characters at all (a scan, or text drawn as outlines).
  * `untrusted` — more than `PAGE_MAX_GARBAGE` (5 %) of its non-space characters are
                  garbage (see `is_garbage`: U+FFFD, private use, unassigned or control
                  code points, `(cid:N)` escapes, or chars pdfium reports a Unicode-map
                  error for), or more than half of them are invisible (render mode 3: an
                  earlier OCR layer of unknown quality, re-OCR rather than trust it).
  * `trusted`   — otherwise.
Region level (`trusted` per region; never trusted on a page that is not):
  * `empty`     — no character lies in the region (the text is an image or outlines).
  * `garbage`   — more than `REGION_MAX_GARBAGE` (2 %) garbage characters.
  * `invisible` — more than half of its characters are invisible.
  * `sparse`    — the characters' vertical extents cover less than `REGION_MIN_COVERAGE`
                  (30 %) of the region's height: most of what the detector saw is not in
                  the text layer (e.g. a scanned paragraph with one line of real text).
  * `ok`        — trusted.

Text is cleaned: pdfium's line-end hyphen marks (U+FFFE, or U+0002 from bounded text)
rejoin the word (`exam-`/`ple` → `example`; kept as `X-Ray` when the next part does not start
in lower case); TeX's spacing accents before a letter are composed (`L´opez` → `López`);
control and format characters are dropped; whitespace is collapsed per line, empty lines
dropped, lines joined with a newline (with nothing between two CJK characters); NFC.
"""

from __future__ import annotations

import ctypes
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pypdfium2 as pdfium

Box = tuple[float, float, float, float]

PAGE_MAX_GARBAGE = 0.05
PAGE_MAX_INVISIBLE = 0.5
REGION_MAX_GARBAGE = 0.02
REGION_MAX_INVISIBLE = 0.5
REGION_MIN_COVERAGE = 0.30
_DEVICE_OVERSAMPLE = 16  # FPDF_DeviceToPage takes ints: map on a 16x finer virtual device

_HYPHEN_MARKS = "\ufffe\x02"
_CID = re.compile(r"\(cid:\d+\)")
_SPACING_ACCENTS = {
    "\u00b4": "\u0301",  # acute
    "\u00a8": "\u0308",  # diaeresis
    "\u02c6": "\u0302",  # circumflex
    "\u02dc": "\u0303",  # tilde
    "\u00b8": "\u0327",  # cedilla
    "\u02c7": "\u030c",  # caron
    "\u02d8": "\u0306",  # breve
    "\u02d9": "\u0307",  # dot above
    "\u02da": "\u030a",  # ring above
    "\u00af": "\u0304",  # macron
}
_ACCENT_BEFORE_LETTER = re.compile("([" + "".join(_SPACING_ACCENTS) + "])([A-Za-z\u0131\u0237])")
_CJK = (
    "\u3000-\u303f\u3040-\u309f\u30a0-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
)
_CJK_CHAR = re.compile(f"[{_CJK}]")
_WS = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")


# -- garbage and cleaning ---------------------------------------------------------------


def is_garbage(ch: str) -> bool:
    """A character that cannot be real text: replacement char, private use, unassigned,
    surrogate or control (other than whitespace and pdfium's hyphen marks)."""
    if ch in _HYPHEN_MARKS or ch in "\t\n\r ":
        return False
    if ch == "\ufffd":
        return True
    cat = unicodedata.category(ch)
    return cat in ("Co", "Cn", "Cs", "Cc")


def garbage_ratio(text: str) -> float:
    """Share of non-whitespace characters that are garbage; `(cid:N)` escapes (what some
    extractors print for unmapped glyphs) count as garbage throughout."""
    cid_chars = sum(len(m) for m in _CID.findall(text))
    rest = _CID.sub("", text)
    chars = [c for c in rest if not c.isspace() and c not in _HYPHEN_MARKS]
    total = len(chars) + cid_chars
    if total == 0:
        return 0.0
    return (sum(1 for c in chars if is_garbage(c)) + cid_chars) / total


def _rejoin_hyphen(match: re.Match[str]) -> str:
    before, after = match.group(1), match.group(2)
    if before.isalpha() and after.islower():
        return before + after
    return before + "-" + after


_HYPHEN_BREAK = re.compile(r"(\S)[\ufffe\x02][ \t]*(?:\r\n|\r|\n)?[ \t]*(\S)")


def _join_lines(lines: list[str]) -> str:
    out = ""
    for line in lines:
        if not out:
            out = line
        elif _CJK_CHAR.match(out[-1]) and _CJK_CHAR.match(line[0]):
            out += line
        else:
            out += "\n" + line
    return out


def clean_text(raw: str) -> str:
    """pdfium's raw text → clean text (hyphens rejoined, accents composed, whitespace
    normalised per line, control/format chars dropped, NFC)."""
    text = _HYPHEN_BREAK.sub(_rejoin_hyphen, raw)
    text = text.replace("\ufffe", "-").replace("\x02", "-")
    text = _ACCENT_BEFORE_LETTER.sub(lambda m: m.group(2) + _SPACING_ACCENTS[m.group(1)], text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    kept = []
    for ch in text:
        if ch == "\n" or ch == "\t":
            kept.append(ch)
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf") or 0xFE00 <= ord(ch) <= 0xFE0F:
            continue
        kept.append(ch)
    text = unicodedata.normalize("NFC", "".join(kept))
    lines = [_WS.sub(" ", line).strip() for line in text.split("\n")]
    return _join_lines([line for line in lines if line])


# -- per-page character table -------------------------------------------------------------


@dataclass(slots=True)
class _Chars:
    """The page's characters: PDF-space boxes (left, bottom, right, top) and flags."""

    boxes: np.ndarray  # (n, 4)
    garbage: np.ndarray  # bool (n,)
    invisible: np.ndarray  # bool (n,)
    counted: np.ndarray  # bool (n,): real, non-space characters


def _read_chars(textpage: pdfium.PdfTextPage) -> _Chars:
    import pypdfium2.raw as pdfium_c

    raw = textpage.raw
    n = max(0, pdfium_c.FPDFText_CountChars(raw))
    boxes = np.zeros((n, 4))
    garbage = np.zeros(n, dtype=bool)
    invisible = np.zeros(n, dtype=bool)
    counted = np.zeros(n, dtype=bool)
    rect = pdfium_c.FS_RECTF()
    modes: dict[int, int] = {}
    prev_code = 0
    for i in range(n):
        if pdfium_c.FPDFText_IsGenerated(raw, i) == 1:
            continue
        code = pdfium_c.FPDFText_GetUnicode(raw, i)
        if 0xDC00 <= code <= 0xDFFF and i > 0 and 0xD800 <= prev_code <= 0xDBFF:
            prev_code = code
            continue  # second half of a UTF-16 pair: counted with the first
        prev_code = code
        if 0xD800 <= code <= 0xDBFF:
            # First half of a pair (an astral char such as math italic): fine if paired.
            nxt = pdfium_c.FPDFText_GetUnicode(raw, i + 1) if i + 1 < n else 0
            ch = "x" if 0xDC00 <= nxt <= 0xDFFF else "\ufffd"
        else:
            ch = chr(code) if 0 <= code < 0x110000 else "\ufffd"
        if ch.isspace() or ch in _HYPHEN_MARKS:
            continue
        counted[i] = True
        garbage[i] = is_garbage(ch) or pdfium_c.FPDFText_HasUnicodeMapError(raw, i) == 1
        # The loose box spans the font's ascent to descent, so lines of text cover their
        # line height whatever the glyphs (x-height letters, CJK, punctuation).
        pdfium_c.FPDFText_GetLooseCharBox(raw, i, ctypes.byref(rect))
        boxes[i] = (rect.left, rect.bottom, rect.right, rect.top)
        obj = pdfium_c.FPDFText_GetTextObject(raw, i)
        if obj:
            key = ctypes.cast(obj, ctypes.c_void_p).value or 0
            mode = modes.get(key)
            if mode is None:
                mode = modes[key] = pdfium_c.FPDFTextObj_GetTextRenderMode(obj)
            invisible[i] = mode == 3  # FPDF_TEXTRENDERMODE_INVISIBLE
    return _Chars(boxes, garbage, invisible, counted)


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegionText:
    text: str
    trusted: bool
    reason: str  # ok | empty | garbage | invisible | sparse | page: <page reason>
    chars: int = 0
    coverage: float = 0.0
    garbage: float = 0.0


@dataclass(frozen=True, slots=True)
class PageTextCheck:
    status: str  # trusted | untrusted | absent
    reason: str
    chars: int
    garbage: float
    invisible: float


@dataclass(slots=True)
class TextLayer:
    """One page's text-layer verdict and its regions' texts, in the order of the boxes."""

    status: str
    reason: str
    page: PageTextCheck
    regions: list[RegionText] = field(default_factory=list)


def _check_page(chars: _Chars) -> PageTextCheck:
    n = int(chars.counted.sum())
    if n == 0:
        return PageTextCheck("absent", "no text layer", 0, 0.0, 0.0)
    garbage = float(chars.garbage[chars.counted].mean())
    invisible = float(chars.invisible[chars.counted].mean())
    if garbage > PAGE_MAX_GARBAGE:
        return PageTextCheck(
            "untrusted", f"garbage: {garbage:.0%} unmapped characters", n, garbage, invisible
        )
    if invisible > PAGE_MAX_INVISIBLE:
        return PageTextCheck(
            "untrusted",
            f"invisible: {invisible:.0%} of the text is invisible (an earlier OCR layer)",
            n,
            garbage,
            invisible,
        )
    return PageTextCheck("trusted", "ok", n, garbage, invisible)


def check_page(page: pdfium.PdfPage) -> PageTextCheck:
    """The page-level verdict alone."""
    textpage = page.get_textpage()
    try:
        return _check_page(_read_chars(textpage))
    finally:
        textpage.close()


# -- coordinates ------------------------------------------------------------------------


def pixel_to_pdf_rect(page: pdfium.PdfPage, scale: float, bbox: Sequence[float]) -> Box:
    """A box in rendered pixels → (left, bottom, right, top) in PDF user space."""
    import pypdfium2.raw as pdfium_c

    k = _DEVICE_OVERSAMPLE
    width, height = page.get_size()  # rotation already applied, crop box
    size_x = max(1, round(width * scale * k))
    size_y = max(1, round(height * scale * k))
    xs, ys = [], []
    px, py = ctypes.c_double(), ctypes.c_double()
    x0, y0, x1, y1 = bbox
    for dx, dy in ((x0, y0), (x1, y0), (x0, y1), (x1, y1)):
        pdfium_c.FPDF_DeviceToPage(
            page.raw,
            0,
            0,
            size_x,
            size_y,
            0,
            round(dx * k),
            round(dy * k),
            ctypes.byref(px),
            ctypes.byref(py),
        )
        xs.append(px.value)
        ys.append(py.value)
    return (min(xs), min(ys), max(xs), max(ys))


# -- regions ----------------------------------------------------------------------------


def _coverage(boxes: np.ndarray, rect: Box) -> float:
    """Share of the rect's height covered by the union of the char boxes' y-extents."""
    _, bottom, _, top = rect
    height = top - bottom
    if height <= 0 or len(boxes) == 0:
        return 0.0
    spans = sorted(
        (max(b[1], bottom), min(b[3], top)) for b in boxes if min(b[3], top) > max(b[1], bottom)
    )
    covered, cur_a, cur_b = 0.0, None, None
    for a, b in spans:
        if cur_b is None or a > cur_b:
            if cur_b is not None and cur_a is not None:
                covered += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None and cur_b is not None:
        covered += cur_b - cur_a
    return covered / height


def _region(
    textpage: pdfium.PdfTextPage, chars: _Chars, rect: Box, page_check: PageTextCheck
) -> RegionText:
    left, bottom, right, top = rect
    text = clean_text(textpage.get_text_bounded(left, bottom, right, top))
    b = chars.boxes
    cx = (b[:, 0] + b[:, 2]) / 2
    cy = (b[:, 1] + b[:, 3]) / 2
    inside = chars.counted & (cx >= left) & (cx <= right) & (cy >= bottom) & (cy <= top)
    n = int(inside.sum())
    garbage = float(chars.garbage[inside].mean()) if n else 0.0
    garbage = max(garbage, garbage_ratio(text))
    invisible = float(chars.invisible[inside].mean()) if n else 0.0
    coverage = _coverage(b[inside], rect) if n else 0.0
    if page_check.status != "trusted":
        return RegionText(text, False, f"page: {page_check.reason}", n, coverage, garbage)
    if n == 0 or not text:
        reason = "empty"
    elif garbage > REGION_MAX_GARBAGE:
        reason = "garbage"
    elif invisible > REGION_MAX_INVISIBLE:
        reason = "invisible"
    elif coverage < REGION_MIN_COVERAGE:
        reason = "sparse"
    else:
        return RegionText(text, True, "ok", n, coverage, garbage)
    return RegionText(text, False, reason, n, coverage, garbage)


def region_texts(
    page: pdfium.PdfPage, scale: float, bboxes: Sequence[Sequence[float]]
) -> TextLayer:
    """Each region's text and trust verdict on an open page (rendered at `scale`)."""
    textpage = page.get_textpage()
    try:
        chars = _read_chars(textpage)
        check = _check_page(chars)
        regions = [
            _region(textpage, chars, pixel_to_pdf_rect(page, scale, bbox), check) for bbox in bboxes
        ]
        return TextLayer(check.status, check.reason, check, regions)
    finally:
        textpage.close()


def read_region_texts(
    pdf: str | Path | pdfium.PdfDocument,
    page_index: int,
    scale: float,
    bboxes: Sequence[Sequence[float]],
) -> TextLayer:
    """`region_texts` for page `page_index` (0-based) of a PDF file or open document."""
    import pypdfium2 as pdfium

    own = not isinstance(pdf, pdfium.PdfDocument)
    doc: Any = pdfium.PdfDocument(str(pdf)) if own else pdf
    try:
        page = doc[page_index]
        try:
            return region_texts(page, scale, bboxes)
        finally:
            page.close()
    finally:
        if own:
            doc.close()


def page_text(page: pdfium.PdfPage) -> str:
    """The whole page's text layer, cleaned (for a page without layout regions)."""
    textpage = page.get_textpage()
    try:
        return clean_text(textpage.get_text_range())
    finally:
        textpage.close()
