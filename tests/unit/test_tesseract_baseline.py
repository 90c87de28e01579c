import numpy as np
import pytest

from benchmarks import tesseract


def test_png_bytes_from_bgr_array() -> None:
    image = np.zeros((10, 20, 3), dtype=np.uint8)
    image[..., 0] = 255  # blue in BGR
    data = tesseract._png_bytes(image)
    assert data.startswith(b"\x89PNG")
    from io import BytesIO

    from PIL import Image

    assert Image.open(BytesIO(data)).getpixel((0, 0)) == (0, 0, 255)


@pytest.mark.skipif(tesseract.tesseract_path() is None, reason="tesseract not installed")
def test_ocr_image_reads_rendered_text() -> None:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (900, 160), "white")
    try:
        font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 48)
    except OSError:
        font = ImageFont.load_default(size=48)
    ImageDraw.Draw(image).text((20, 40), "Hello pagemill world", fill="black", font=font)
    text = tesseract.ocr_image(image, "eng", dpi=200)
    assert "pagemill" in text.lower()


@pytest.mark.skipif(tesseract.tesseract_path() is None, reason="tesseract not installed")
def test_missing_language_is_clear() -> None:
    with pytest.raises(tesseract.TesseractUnavailable, match="xx_nope"):
        tesseract.ocr_image(np.full((20, 20, 3), 255, dtype=np.uint8), "xx_nope")
