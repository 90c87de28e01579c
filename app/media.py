"""What kind of file an upload is, from its first bytes, never from its name; and its
name made safe to show."""

from __future__ import annotations

import unicodedata

PDF = "application/pdf"
PNG = "image/png"
JPEG = "image/jpeg"
TIFF = "image/tiff"
WEBP = "image/webp"
SUPPORTED = (PDF, PNG, JPEG, TIFF, WEBP)


def sniff_media_type(head: bytes) -> str | None:
    """The media type from a file's first bytes (at least 16), or None if unsupported."""
    if head[:1024].lstrip(b"\x00\t\n\r ").startswith(b"%PDF-") or b"%PDF-" in head[:1024]:
        return PDF
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return TIFF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    return None


def describe_unsupported(head: bytes) -> str:
    if not head:
        return "empty file (0 bytes)"
    if head.startswith(b"\x7fELF") or head.startswith(b"MZ"):
        return "not a document: an executable program"
    if head.startswith(b"PK\x03\x04"):
        return "not a supported document: a ZIP archive (Office files are not supported)"
    try:
        head.decode("utf-8")
        return "not a document: plain text"
    except UnicodeDecodeError:
        return "not a supported document type (supported: PDF, PNG, JPEG, TIFF, WebP)"


# Bidirectional overrides and isolates: they make "invoice\u202eFDP.exe" display as
# "invoiceexe.PDF".
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
MAX_FILENAME_CHARS = 1024  # jobs.filename


def display_filename(name: str) -> str:
    """A submitted file name as it is stored and shown: as given (a path-like name stays
    a label; no key or path is ever built from it) without control and bidi-override
    characters, which would rewrite a terminal or a listing, and within the column's size."""
    cleaned = "".join(
        c for c in valid_unicode(name) if unicodedata.category(c) != "Cc" and c not in BIDI_CONTROLS
    ).strip()
    return cleaned[:MAX_FILENAME_CHARS] or "upload"


def valid_unicode(name: str) -> str:
    """Undecodable bytes of a file system name (Python keeps them as lone surrogates, which
    no database accepts) become U+FFFD."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")
