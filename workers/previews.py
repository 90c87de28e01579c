"""The page image the web page shows under its region boxes: the rendered page, scaled
down to a bounded size, as a JPEG (a tenth of a PNG's bytes for a scanned page)."""

from __future__ import annotations

import numpy as np

JPEG_QUALITY = 80


def page_image(image: np.ndarray, max_side: int) -> bytes:
    """`image` (BGR or grey) no larger than `max_side` on its longest side, as JPEG bytes.
    The region boxes stay in render pixels; the viewer scales them with the image."""
    import cv2

    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(data.tobytes())
