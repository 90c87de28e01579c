"""Documents with known content, generated at test time (nothing copied in)."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

A4_POINTS = (595.0, 842.0)

SAMPLE_TITLE = "Quarterly Report on River Levels"
SAMPLE_PARAGRAPHS = (
    "The northern gauge recorded a steady rise during the first week of March.",
    "Rainfall in the upper valley was twice the seasonal average for that month.",
    "Engineers opened the spillway on the ninth day to protect the old bridge.",
    "Water returned to normal levels before the end of the month without damage.",
)


def page_image(
    title: str | None, paragraphs: Sequence[str], dpi: int = 200, size_pt: float = 13.0
) -> Image.Image:
    """An A4 page with a title and paragraphs, one line each, in Pillow's bundled font."""
    width, height = (round(side * dpi / 72) for side in A4_POINTS)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    margin = round(72 * dpi / 72)
    y = margin
    if title:
        font = ImageFont.load_default(size=round(size_pt * 1.6 * dpi / 72))
        draw.text((margin, y), title, fill="black", font=font)
        y += round(size_pt * 3.2 * dpi / 72)
    font = ImageFont.load_default(size=round(size_pt * dpi / 72))
    for paragraph in paragraphs:
        draw.text((margin, y), paragraph, fill="black", font=font)
        y += round(size_pt * 2.4 * dpi / 72)
    return image


def make_scanned_pdf(path: Path, pages: Sequence[tuple[str | None, Sequence[str]]]) -> Path:
    """An image-only PDF (like a scan): no text layer, so every word must be OCRed."""
    images = [page_image(title, paragraphs) for title, paragraphs in pages]
    images[0].save(path, "PDF", resolution=200.0, save_all=True, append_images=images[1:])
    return path


def make_born_digital_pdf(
    path: Path, pages: Sequence[tuple[str | None, Sequence[str]]], font_size: float = 12.0
) -> Path:
    """A PDF with real text objects (Helvetica), so it has a trustworthy text layer."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    pdf = pdfium.PdfDocument.new()
    for title, paragraphs in pages:
        page = pdf.new_page(*A4_POINTS)
        y = A4_POINTS[1] - 72
        lines = ([(title, font_size * 1.6)] if title else []) + [
            (text, font_size) for text in paragraphs
        ]
        for text, size in lines:
            obj = raw.FPDFPageObj_NewTextObj(pdf.raw, b"Helvetica", ctypes.c_float(size))
            encoded = (text + "\x00").encode("utf-16-le")
            buffer = ctypes.create_string_buffer(encoded, len(encoded))
            raw.FPDFText_SetText(obj, ctypes.cast(buffer, ctypes.POINTER(raw.FPDF_WCHAR)))
            raw.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 72, y)
            raw.FPDFPage_InsertObject(page.raw, obj)
            y -= size * 2.2
        raw.FPDFPage_GenerateContent(page.raw)
        page.close()
    pdf.save(str(path))
    pdf.close()
    return path


def make_encrypted_pdf(path: Path, source: Path, password: str = "secret") -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(str(source)).pages:
        writer.add_page(page)
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="RC4-128")
    with path.open("wb") as f:
        writer.write(f)
    return path


def make_corrupt_pdf(path: Path, source: Path) -> Path:
    """A PDF header with the body cut and scrambled: pdfium must refuse it."""
    data = source.read_bytes()
    path.write_bytes(data[:20] + bytes(reversed(data[20:400])) + b"\x00garbage")
    return path


def make_image(path: Path, fmt: str, title: str | None, paragraphs: Sequence[str]) -> Path:
    page_image(title, paragraphs).save(path, fmt)
    return path


def make_multipage_tiff(path: Path, pages: Sequence[tuple[str | None, Sequence[str]]]) -> Path:
    images = [page_image(title, paragraphs) for title, paragraphs in pages]
    images[0].save(path, "TIFF", save_all=True, append_images=images[1:], compression="tiff_lzw")
    return path


def sample_text() -> str:
    return "\n".join((SAMPLE_TITLE, *SAMPLE_PARAGRAPHS))
