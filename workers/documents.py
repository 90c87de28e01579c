"""Opening, validating and rendering documents: PDF through pypdfium2, images through Pillow.

The type is decided by the file's first bytes, never by its name. Every way a document can
be unusable ends as a DocumentError with a message a person can act on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.errors import DocumentError
from app.media import PDF, SUPPORTED, describe_unsupported, sniff_media_type

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["PDF", "DocumentError", "describe_unsupported", "sniff_media_type"]


@dataclass(frozen=True, slots=True)
class PageInfo:
    width_pt: float  # images: pixels at 72 dpi equivalents, see page_sizes()
    height_pt: float


@dataclass(frozen=True, slots=True)
class RenderedPage:
    image: np.ndarray  # BGR uint8, H x W x 3
    dpi: float  # effective resolution, after the pixel cap
    scale: float  # pixels per PDF point (PDF) or per source pixel (images)


def _pdfium_message(exc: Exception) -> str:
    text = str(exc)
    lowered = text.lower()
    if "password" in lowered or "security" in lowered:
        return "encrypted PDF: a password is required to open it"
    if "format" in lowered or "data" in lowered or "file" in lowered:
        return f"corrupt or unreadable PDF ({text})"
    return f"cannot open PDF ({text})"


@contextmanager
def open_pdf(path: Path) -> Iterator[object]:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        raise DocumentError(_pdfium_message(exc)) from None
    try:
        yield pdf
    finally:
        pdf.close()


def page_sizes(path: Path, media_type: str, max_pages: int) -> list[PageInfo]:
    """Opens the document and reads every page's size; DocumentError if it is unusable."""
    if media_type == PDF:
        with open_pdf(path) as pdf:
            count = len(pdf)  # type: ignore[arg-type]
            _check_count(count, max_pages)
            sizes = []
            for index in range(count):
                try:
                    width, height = pdf.get_page_size(index)  # type: ignore[attr-defined]
                except Exception as exc:  # pdfium raises plain errors on broken page trees
                    raise DocumentError(
                        f"corrupt PDF: page {index + 1} unreadable ({exc})"
                    ) from None
                if not (width > 0 and height > 0):
                    raise DocumentError(f"corrupt PDF: page {index + 1} has no size")
                sizes.append(PageInfo(float(width), float(height)))
            return sizes
    if media_type in SUPPORTED:
        with _open_image(path) as image:
            count = getattr(image, "n_frames", 1)
            _check_count(count, max_pages)
            sizes = []
            for index in range(count):
                image.seek(index)
                sizes.append(PageInfo(float(image.width), float(image.height)))
            return sizes
    raise DocumentError(f"unsupported media type {media_type!r}")


def _check_count(count: int, max_pages: int) -> None:
    if count <= 0:
        raise DocumentError("empty document: it has no pages")
    if count > max_pages:
        raise DocumentError(f"too many pages: {count} (the limit is {max_pages})")


@contextmanager
def _open_image(path: Path) -> Iterator[PILImage]:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise DocumentError(f"corrupt or unreadable image ({exc})") from None
    except Image.DecompressionBombError as exc:
        raise DocumentError(f"image too large: {exc}") from None
    try:
        yield image
    finally:
        image.close()


def render_scale(width: float, height: float, dpi: float, max_pixels: int) -> float:
    """Pixels per unit: dpi/72 for PDF points, lowered so the page stays under max_pixels."""
    scale = dpi / 72.0
    if width * height * scale * scale > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
    return scale


def render_page(
    path: Path, media_type: str, number: int, dpi: float, max_pixels: int
) -> RenderedPage:
    """Renders one page (1-based) to a BGR array, without loading the other pages."""
    if media_type == PDF:
        with open_pdf(path) as pdf:
            try:
                page = pdf[number - 1]  # type: ignore[index]
            except Exception as exc:
                raise DocumentError(f"page {number} unreadable ({exc})") from None
            try:
                width, height = page.get_size()
                scale = render_scale(width, height, dpi, max_pixels)
                bitmap = page.render(scale=scale, rev_byteorder=False, prefer_bgrx=False)
                try:
                    array = np.array(bitmap.to_numpy(), copy=True)  # to_numpy() is a view
                finally:
                    bitmap.close()
            except Exception as exc:
                raise DocumentError(f"page {number} could not be rendered ({exc})") from None
            finally:
                page.close()
        return RenderedPage(image=_to_bgr(array, bgr=True), dpi=scale * 72.0, scale=scale)
    with _open_image(path) as image:
        from PIL import Image

        try:
            image.seek(number - 1)
            frame = image.convert("RGB")
        except (OSError, EOFError, ValueError) as exc:
            raise DocumentError(f"page {number} unreadable ({exc})") from None
        scale = render_scale(frame.width, frame.height, 72.0, max_pixels)  # 1.0 unless capped
        if scale < 1.0:
            size = (max(1, round(frame.width * scale)), max(1, round(frame.height * scale)))
            frame = frame.resize(size, Image.Resampling.LANCZOS)
        dpi_info = image.info.get("dpi", (dpi, dpi))
        source_dpi = float(dpi_info[0]) if dpi_info and dpi_info[0] else dpi
        rgb = np.asarray(frame)
    return RenderedPage(image=_to_bgr(rgb, bgr=False), dpi=source_dpi * scale, scale=scale)


def _to_bgr(array: np.ndarray, *, bgr: bool) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 4:
        array = array[:, :, :3]
    if not bgr:
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array)
