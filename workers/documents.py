"""Opening, validating and rendering documents: PDF through pypdfium2, images through Pillow.

The type is decided by the file's first bytes, never by its name. Every way a document can
be unusable ends as a DocumentError with a message a person can act on.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


# A PDF page larger than this (about 35 m) or smaller than a point on a side is no page a
# person made; it is refused as a page error rather than rendered.
MAX_PAGE_POINTS = 100_000.0
MIN_PAGE_POINTS = 1.0


def _pdfium_message(exc: Exception, password_given: bool = False) -> str:
    text = str(exc)
    lowered = text.lower()
    if getattr(exc, "err_code", None) == _PRIMED_ERROR:  # see open_pdf
        return "empty or broken PDF: pdfium finds no page to open"
    if "password" in lowered or "security" in lowered:
        if password_given:
            return "encrypted PDF: the password given does not open it"
        return "encrypted PDF: a password is required to open it"
    if "format" in lowered or "data" in lowered or "file" in lowered:
        return f"corrupt or unreadable PDF ({text})"
    return f"cannot open PDF ({text})"


# pdfium fails on a PDF without pages without setting its last error, so the error of
# the previous failed document in this process would be reported instead (a page-less PDF
# after an encrypted one said "password required"). open_pdf first sets it to "file access
# error" by opening no file; still that value after a failed open of an existing file, it
# means pdfium gave no reason.
_PRIMED_ERROR = 2  # FPDF_ERR_FILE


@contextmanager
def open_pdf(path: Path, password: str | None = None) -> Iterator[Any]:
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    raw.FPDF_LoadDocument(b"", None)  # fails, setting the last error to FPDF_ERR_FILE
    try:
        pdf = pdfium.PdfDocument(str(path), password=password)
    except pdfium.PdfiumError as exc:
        raise DocumentError(_pdfium_message(exc, password is not None)) from None
    try:
        yield pdf
    finally:
        pdf.close()


def page_sizes(
    path: Path,
    media_type: str,
    max_pages: int,
    *,
    password: str | None = None,
    max_image_pixels: int | None = None,
) -> list[PageInfo]:
    """Opens the document and reads every page's size, one at a time without rendering;
    DocumentError if it is unusable. A PDF page of absurd size is kept here and fails on
    its own when rendered, so the rest of the document goes on."""
    if media_type == PDF:
        with open_pdf(path, password) as pdf:
            count = len(pdf)
            _check_count(count, max_pages)
            sizes = []
            for index in range(count):
                try:
                    width, height = pdf.get_page_size(index)
                except Exception as exc:  # pdfium raises plain errors on broken page trees
                    raise DocumentError(
                        f"corrupt PDF: page {index + 1} unreadable ({exc})"
                    ) from None
                sizes.append(PageInfo(float(width), float(height)))
            return sizes
    if media_type in SUPPORTED:
        with _open_image(path, max_image_pixels) as image:
            count = getattr(image, "n_frames", 1)
            _check_count(count, max_pages)
            sizes = []
            for index in range(count):
                _seek(image, index, max_image_pixels)
                sizes.append(PageInfo(float(image.width), float(image.height)))
            return sizes
    raise DocumentError(f"unsupported media type {media_type!r}")


def check_page_points(width: float, height: float) -> None:
    """DocumentError for a PDF page no renderer should attempt."""
    if not (MIN_PAGE_POINTS <= width <= MAX_PAGE_POINTS) or not (
        MIN_PAGE_POINTS <= height <= MAX_PAGE_POINTS
    ):
        raise DocumentError(
            f"page size {width:g} x {height:g} pt is not a real page "
            f"(each side must be {MIN_PAGE_POINTS:g} to {MAX_PAGE_POINTS:g} pt)"
        )


def check_image_pixels(width: int, height: int, max_pixels: int | None) -> None:
    """DocumentError for an image whose header declares more pixels than allowed: checked
    before anything is decoded, so a small file cannot make a worker allocate gigabytes."""
    if width <= 0 or height <= 0:
        raise DocumentError(f"corrupt image: it declares {width} x {height} pixels")
    if max_pixels is not None and width * height > max_pixels:
        raise DocumentError(
            f"image too large: {width} x {height} pixels (the limit is {max_pixels} pixels, "
            "PAGEMILL_MAX_IMAGE_PIXELS)"
        )


def _seek(image: PILImage, index: int, max_pixels: int | None) -> None:
    try:
        image.seek(index)
    except (OSError, EOFError, ValueError) as exc:
        raise DocumentError(f"page {index + 1} unreadable ({exc})") from None
    check_image_pixels(image.width, image.height, max_pixels)


def _check_count(count: int, max_pages: int) -> None:
    if count <= 0:
        raise DocumentError("empty document: it has no pages")
    if count > max_pages:
        raise DocumentError(f"too many pages: {count} (the limit is {max_pages})")


@contextmanager
def _open_image(path: Path, max_pixels: int | None = None) -> Iterator[PILImage]:
    """Opens an image, reading its header only; refuses one that declares too many pixels."""
    from PIL import Image, UnidentifiedImageError

    # Pillow's own guard is process-wide and approximate (a warning at its limit, an error
    # at twice it); the exact check below reads the header's size before anything decodes.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():  # the check below says it, as an error
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise DocumentError(f"image too large: {exc} (PAGEMILL_MAX_IMAGE_PIXELS)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DocumentError(f"corrupt or unreadable image ({exc})") from None
    try:
        check_image_pixels(image.width, image.height, max_pixels)
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
    path: Path,
    media_type: str,
    number: int,
    dpi: float,
    max_pixels: int,
    *,
    password: str | None = None,
    timeout: float | None = None,
    max_image_pixels: int | None = None,
) -> RenderedPage:
    """Renders one page (1-based) to a BGR array, without loading the other pages.

    A PDF page is rendered progressively and abandoned once `timeout` seconds have passed
    (pdfium asks between drawing steps whether to pause); loading the page's content is
    counted too, but only checked when it returns."""
    if media_type == PDF:
        deadline = time.monotonic() + timeout if timeout is not None else None
        with open_pdf(path, password) as pdf:
            try:
                page = pdf[number - 1]
            except Exception as exc:
                raise DocumentError(f"page {number} unreadable ({exc})") from None
            try:
                width, height = page.get_size()
                check_page_points(width, height)
                scale = render_scale(width, height, dpi, max_pixels)
                array = _render_pdf_page(page, width, height, scale, deadline, timeout)
            except DocumentError:
                raise
            except Exception as exc:
                raise DocumentError(f"page {number} could not be rendered ({exc})") from None
            finally:
                page.close()
        return RenderedPage(image=_to_bgr(array, bgr=True), dpi=scale * 72.0, scale=scale)
    with _open_image(path, max_image_pixels) as image:
        from PIL import Image

        _seek(image, number - 1, max_image_pixels)
        try:
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


class RenderTimeout(DocumentError):
    pass


def _render_pdf_page(
    page: Any,
    width: float,
    height: float,
    scale: float,
    deadline: float | None,
    timeout: float | None,
) -> np.ndarray:
    """pdfium's progressive renderer with a pause callback that checks the deadline: the
    only way to stop a slow render from inside the worker without killing it."""
    import pypdfium2 as pdfium
    import pypdfium2.internal as pdfium_i
    import pypdfium2.raw as raw

    def expired() -> bool:
        return deadline is not None and time.monotonic() > deadline

    def too_slow() -> RenderTimeout:
        return RenderTimeout(
            f"rendering took longer than {timeout:g} s (PAGEMILL_RENDER_TIMEOUT_SECONDS)"
        )

    if expired():  # loading the page's content alone took the time
        raise too_slow()
    size_x, size_y = max(1, int(width * scale)), max(1, int(height * scale))  # under the cap
    bitmap = pdfium.PdfBitmap.new_native(
        size_x, size_y, format=raw.FPDFBitmap_BGR, rev_byteorder=False
    )
    try:
        bitmap.fill_rect((255, 255, 255, 255), 0, 0, size_x, size_y)
        pause = raw.IFSDK_PAUSE(version=1)
        pdfium_i.set_callback(pause, "NeedToPauseNow", lambda _: expired())
        status = raw.FPDF_RenderPageBitmap_Start(
            bitmap, page, 0, 0, size_x, size_y, 0, raw.FPDF_ANNOT, pause
        )
        try:
            while status == raw.FPDF_RENDER_TOBECONTINUED:
                if expired():
                    raise too_slow()
                status = raw.FPDF_RenderPage_Continue(page, pause)
        finally:
            raw.FPDF_RenderPage_Close(page)
        if status != raw.FPDF_RENDER_DONE:
            raise DocumentError("pdfium could not render it")
        return np.array(bitmap.to_numpy(), copy=True)  # to_numpy() is a view
    finally:
        bitmap.close()


def _to_bgr(array: np.ndarray, *, bgr: bool) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 4:
        array = array[:, :, :3]
    if not bgr:
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array)
