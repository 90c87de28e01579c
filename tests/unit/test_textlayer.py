import ctypes
import io
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.corpus import CORPUS

pdfium = pytest.importorskip("pypdfium2")
import pypdfium2.raw as pdfium_c  # noqa: E402

from benchmarks.accuracy_metrics import cer  # noqa: E402
from workers.textlayer import (  # noqa: E402
    check_page,
    clean_text,
    garbage_ratio,
    is_garbage,
    page_text,
    pixel_to_pdf_rect,
    read_region_texts,
    region_texts,
)

needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="corpus not available")
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
SCALE = 200 / 72


def corpus_entries() -> list[dict]:
    if not CORPUS.is_dir():
        return []
    return json.loads((CORPUS / "manifest.json").read_text())["entries"]


# -- cleaning and garbage ---------------------------------------------------------------


def test_clean_text_rejoins_line_end_hyphens() -> None:
    assert clean_text("Joint Accel\ufffe\r\nerator Conference") == "Joint Accelerator Conference"
    assert clean_text("Accel\x02erator") == "Accelerator"
    assert clean_text("X\ufffe\r\nRay") == "X-Ray"


def test_clean_text_whitespace_controls_accents_cjk() -> None:
    raw = "  a \t b\r\n\r\n c\x00d\u200b e  \r\nL\u00b4opez\r\n中文\r\n字符\r\nend"
    assert clean_text(raw) == "a b\ncd e\nLópez\n中文字符\nend"


def test_garbage_ratio() -> None:
    assert garbage_ratio("") == 0.0
    assert garbage_ratio("plain text, 中文 𝑥") == 0.0
    assert garbage_ratio("\ufffd\ufffdab") == 0.5
    assert garbage_ratio("\ue000\ue001ab") == 0.5  # private use
    assert garbage_ratio("(cid:12)(cid:7)ab") > 0.8
    assert garbage_ratio("a\x01b\x03") == 0.5
    assert garbage_ratio("hyphen\ufffe\x02") == 0.0
    assert is_garbage("\U000f0001") and not is_garbage("é")


# -- PDFs built in the test ---------------------------------------------------------------


def build_pdf(
    text: str = "Hello world",
    *,
    rotate: int = 0,
    render_mode: int | None = None,
    font_file: Path | None = None,
    cropbox: tuple[float, float, float, float] | None = None,
) -> bytes:
    """A 400 x 300 pt page with one line of text at (50, 200)."""
    doc = pdfium.PdfDocument.new()
    page = doc.new_page(400, 300)
    if font_file:
        data = font_file.read_bytes()
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        font = pdfium_c.FPDFText_LoadFont(doc.raw, buf, len(data), pdfium_c.FPDF_FONT_TRUETYPE, 1)
        obj = pdfium_c.FPDFPageObj_CreateTextObj(doc.raw, font, ctypes.c_float(20))
    else:
        obj = pdfium_c.FPDFPageObj_NewTextObj(doc.raw, b"Helvetica", ctypes.c_float(20))
    wide = ctypes.create_string_buffer((text + "\x00").encode("utf-16-le"))
    pdfium_c.FPDFText_SetText(obj, ctypes.cast(wide, ctypes.POINTER(pdfium_c.FPDF_WCHAR)))
    pdfium_c.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 50, 200)
    if render_mode is not None:
        pdfium_c.FPDFTextObj_SetTextRenderMode(obj, render_mode)
    pdfium_c.FPDFPage_InsertObject(page.raw, obj)
    pdfium_c.FPDFPage_GenerateContent(page.raw)
    if rotate:
        page.set_rotation(rotate)
    if cropbox:
        page.set_cropbox(*cropbox)
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def ink_box(page, scale: float) -> tuple[float, float, float, float]:
    """The rendered text's pixel box, with a small margin, as a layout engine would give."""
    bitmap = page.render(scale=scale)
    array = bitmap.to_numpy()
    ys, xs = np.where(array[..., 0] < 128)
    return (xs.min() - 4.0, ys.min() - 4.0, xs.max() + 4.0, ys.max() + 4.0)


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_rotated_pages_map_pixels_to_the_text(rotate: int) -> None:
    doc = pdfium.PdfDocument(build_pdf(rotate=rotate))
    page = doc[0]
    box = ink_box(page, 2.0)
    left, bottom, right, top = pixel_to_pdf_rect(page, 2.0, box)
    assert 45 < left < 55 and 190 < bottom < 205 and 140 < right < 160 and 210 < top < 225
    layer = region_texts(page, 2.0, [box, (0, 0, 20, 20)])
    assert layer.status == "trusted"
    assert layer.regions[0].text == "Hello world" and layer.regions[0].trusted
    assert layer.regions[1].reason == "empty" and not layer.regions[1].trusted


def test_cropbox_offset_is_respected() -> None:
    doc = pdfium.PdfDocument(build_pdf(cropbox=(40, 150, 300, 280)))
    page = doc[0]
    box = ink_box(page, 2.0)
    layer = region_texts(page, 2.0, [box])
    assert layer.regions[0].text == "Hello world" and layer.regions[0].trusted


def test_invisible_text_layer_is_not_trusted() -> None:
    doc = pdfium.PdfDocument(build_pdf(render_mode=3))
    layer = region_texts(doc[0], 1.0, [(0, 0, 400, 300)])
    assert layer.status == "untrusted" and "invisible" in layer.reason
    assert layer.regions[0].text == "Hello world"  # still there for text mode
    assert not layer.regions[0].trusted and layer.regions[0].reason.startswith("page:")


@pytest.mark.skipif(not DEJAVU.is_file(), reason="DejaVu font not installed")
def test_private_use_text_is_garbage() -> None:
    pua = "".join(chr(0xE000 + i) for i in range(20))
    doc = pdfium.PdfDocument(build_pdf(pua + " ok", font_file=DEJAVU))
    check = check_page(doc[0])
    assert check.status == "untrusted" and check.reason.startswith("garbage")
    assert check.garbage > 0.5


def test_sparse_region_is_not_trusted() -> None:
    # One line of text in a tall region: the detector saw much more than the layer holds.
    doc = pdfium.PdfDocument(build_pdf())
    page = doc[0]
    x0, y0, x1, y1 = ink_box(page, 2.0)
    layer = region_texts(page, 2.0, [(x0, y0 - 150, x1, y1 + 150)])
    assert layer.regions[0].reason == "sparse" and layer.regions[0].coverage < 0.3


@needs_corpus
def test_scanned_page_has_no_text_layer(tmp_path: Path) -> None:
    src = pdfium.PdfDocument(str(CORPUS / "pages" / "d09_grfguide_p6.pdf"))
    image = src[0].render(scale=100 / 72).to_pil()
    path = tmp_path / "scan.pdf"
    image.save(path, "PDF", resolution=100.0)
    w, h = image.size
    layer = read_region_texts(path, 0, 100 / 72, [(0, 0, w, h), (10, 10, 200, 200)])
    assert layer.status == "absent"
    assert all(not r.trusted and r.text == "" for r in layer.regions)


@needs_corpus
@pytest.mark.parametrize("entry", corpus_entries(), ids=[e["id"] for e in corpus_entries()])
def test_corpus_pages_pass_and_match_truth(entry: dict) -> None:
    doc = pdfium.PdfDocument(str(CORPUS / entry["pdf"]))
    page = doc[0]
    truth = (CORPUS / entry["truth"]).read_text()
    w, h = page.get_size()
    full = (0.0, 0.0, w * SCALE, h * SCALE)
    top_half = (0.0, 0.0, w * SCALE, h * SCALE / 2)
    layer = region_texts(page, SCALE, [full, top_half])
    assert layer.status == "trusted", layer.reason
    whole, half = layer.regions
    assert whole.trusted and whole.reason == "ok"
    assert cer(truth, whole.text) < 0.02
    assert cer(truth, page_text(page)) < 0.02
    assert 0 < len(half.text) < len(whole.text)
