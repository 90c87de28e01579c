"""workers.previews: the page image kept for the web page."""

from __future__ import annotations

import numpy as np

from workers.crops import decode_image
from workers.previews import page_image


def test_a_large_page_is_scaled_to_the_longest_side_keeping_its_shape() -> None:
    page = np.full((2339, 1654, 3), 255, dtype=np.uint8)  # A4 at 200 dpi
    page[1000:1100, 200:1400] = 0  # a black bar, to find again
    data = page_image(page, 1600)
    assert data[:3] == b"\xff\xd8\xff"  # JPEG
    out = decode_image(data)
    assert out.shape[0] == 1600
    assert abs(out.shape[1] - round(1654 * 1600 / 2339)) <= 1
    scale = 1600 / 2339
    assert out[round(1050 * scale), round(800 * scale)].max() < 40
    assert out[round(500 * scale), round(800 * scale)].min() > 215


def test_a_small_page_is_not_enlarged_and_grey_works() -> None:
    out = decode_image(page_image(np.full((300, 200), 128, dtype=np.uint8), 1600))
    assert out.shape[:2] == (300, 200)
