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


# -- hostile documents -----------------------------------------------------------------


def raw_pdf(pages: Sequence[tuple[Sequence[float], bytes]]) -> bytes:
    """A PDF written byte by byte: each page a MediaBox and a content stream (Helvetica as
    /F1), so a test can make pages no PDF library would write."""
    import zlib

    objects: dict[int, bytes] = {1: b"<< /Type /Catalog /Pages 2 0 R >>"}
    kids = []
    number = 3
    font = b"<< /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >>"
    for box, content in pages:
        data = zlib.compress(content)
        objects[number + 1] = (
            b"<< /Filter /FlateDecode /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"
        )
        objects[number] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox ["
            + " ".join(f"{v:g}" for v in box).encode()
            + b"] /Contents %d 0 R /Resources " % (number + 1)
            + font
            + b" >>"
        )
        kids.append(number)
        number += 2
    refs = b" ".join(b"%d 0 R" % k for k in kids)
    objects[2] = b"<< /Type /Pages /Kids [" + refs + b"] /Count %d >>" % len(kids)
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for key in sorted(objects):
        offsets[key] = len(out)
        out += b"%d 0 obj\n" % key + objects[key] + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % number
    out += b"".join(b"%010d 00000 n \n" % offsets[key] for key in range(1, number))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (number, xref)
    return bytes(out)


def text_line(text: str, size: float = 14.0, y: float = 720.0) -> bytes:
    return b"BT /F1 %g Tf 72 %g Td (%s) Tj ET\n" % (size, y, text.encode("latin-1"))


def slow_page_content(lines: int = 10_000) -> bytes:
    """A page that takes pdfium many seconds to draw (thousands of wide dashed strokes)
    from a content stream of a few kilobytes compressed."""
    strokes = b"".join(b"%d 0 m %d 842 l S\n" % (i % 595, (i * 7) % 595) for i in range(lines))
    return b"5 w [0.5 0.5] 0 d\n" + strokes


def make_raw_pdf(path: Path, pages: Sequence[tuple[Sequence[float], bytes]]) -> Path:
    path.write_bytes(raw_pdf(pages))
    return path


def make_zero_page_pdf(path: Path) -> Path:
    from pypdf import PdfWriter

    with path.open("wb") as f:
        PdfWriter().write(f)
    return path


def make_truncated_pdf(path: Path, source: Path) -> Path:
    """The first half of a good PDF, as an interrupted download leaves it."""
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_bad_xref_pdf(path: Path, source: Path) -> Path:
    """A good PDF whose cross-reference offsets all point 7 bytes off (pdfium rebuilds it)."""
    import re

    data = source.read_bytes()
    at = data.rfind(b"\nxref")
    table = re.sub(
        rb"(\d{10}) (\d{5}) n",
        lambda m: b"%010d %s n" % (int(m.group(1)) + 7, m.group(2)),
        data[at:],
    )
    path.write_bytes(data[:at] + table)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_png_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A valid PNG header declaring width x height RGB pixels over a few bytes of data."""
    import struct
    import zlib

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _png_chunk(b"IEND", b"")
    )
    path.write_bytes(data)
    return path


def make_jpeg_bomb(path: Path, width: int = 65_000, height: int = 65_000) -> Path:
    """A small real JPEG whose start-of-frame header is rewritten to declare width x height."""
    import io
    import struct

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "white").save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    at = data.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height, width
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def make_tiff_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A minimal baseline TIFF (one IFD, uncompressed grey) declaring width x height."""
    import struct

    entries = [  # tag, type (3 short, 4 long), value
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8),  # strip offset: right after the header
        (277, 3, 1),
        (278, 4, height),
        (279, 4, 16),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        ifd += struct.pack("<HHI", tag, kind, 1) + (
            struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        )
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 24) + b"\x00" * 16 + ifd)
    return path
