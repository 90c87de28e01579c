"""app.media: what a file is, from its first bytes, never from its name."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from app.media import JPEG, PDF, PNG, SUPPORTED, TIFF, WEBP, describe_unsupported, sniff_media_type


def _image_bytes(fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, fmt, **save)
    return buffer.getvalue()


def test_pdf_header() -> None:
    assert sniff_media_type(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj") == PDF


def test_pdf_after_leading_junk() -> None:
    # Readers accept a PDF whose header is not at byte 0 (within the first 1 KiB).
    assert sniff_media_type(b"\n\r\n  %PDF-1.4\n") == PDF
    assert sniff_media_type(b"\x00" * 300 + b"garbage%PDF-1.4\n") == PDF
    assert sniff_media_type(b"x" * 1100 + b"%PDF-1.4\n") is None


@pytest.mark.parametrize(
    ("fmt", "save", "expected"),
    [
        ("PNG", {}, PNG),
        ("JPEG", {}, JPEG),
        ("WEBP", {}, WEBP),
        ("TIFF", {}, TIFF),
    ],
)
def test_real_images(fmt: str, save: dict[str, object], expected: str) -> None:
    assert sniff_media_type(_image_bytes(fmt, **save)[:1024]) == expected


@pytest.mark.parametrize(
    "head",
    [
        b"II*\x00\x08\x00\x00\x00",  # little-endian TIFF
        b"MM\x00*\x00\x00\x00\x08",  # big-endian TIFF
        b"II+\x00\x08\x00\x00\x00",  # BigTIFF, little-endian
        b"MM\x00+\x00\x08\x00\x00",  # BigTIFF, big-endian
    ],
)
def test_tiff_both_byte_orders(head: bytes) -> None:
    assert sniff_media_type(head + bytes(16)) == TIFF


def test_big_endian_tiff_written_by_pillow() -> None:
    data = _image_bytes("TIFF")
    # Pillow writes the host's byte order; flip the header's marker and check both parse.
    assert data[:4] in (b"II*\x00", b"MM\x00*")
    other = b"MM\x00*" if data[:2] == b"II" else b"II*\x00"
    assert sniff_media_type(other + data[4:]) == TIFF


def test_webp_needs_both_riff_and_webp() -> None:
    assert sniff_media_type(b"RIFF\x24\x00\x00\x00WEBPVP8 ") == WEBP
    assert sniff_media_type(b"RIFF\x24\x00\x00\x00WAVEfmt ") is None  # a WAV file


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b"\x7fELF\x02\x01\x01\x00" + bytes(64), "executable"),
        (b"MZ\x90\x00\x03\x00" + bytes(64), "executable"),
        (b"PK\x03\x04\x14\x00\x06\x00" + bytes(64), "ZIP archive"),
        (b"just some notes, not a document\n", "plain text"),
        ("Grüße, π ≈ 3.14\n".encode(), "plain text"),
        (b"", "empty file"),
        (b"\x00\x01\xfe\xff\x80\x81binary", "not a supported document type"),
    ],
)
def test_unsupported_files_are_refused_with_a_reason(head: bytes, reason: str) -> None:
    assert sniff_media_type(head) is None
    assert reason in describe_unsupported(head)


def test_supported_list() -> None:
    assert set(SUPPORTED) == {PDF, PNG, JPEG, TIFF, WEBP}
