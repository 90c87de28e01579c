"""Region crops: cut with a margin, and bundled one archive per page so a page's crops cost
one storage round trip, not one per region."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np


def crop_region(image: np.ndarray, bbox: Sequence[float], margin: int) -> np.ndarray:
    """The region's pixels plus `margin` on every side, clamped to the page."""
    height, width = image.shape[:2]
    x0 = max(0, int(bbox[0]) - margin)
    y0 = max(0, int(bbox[1]) - margin)
    x1 = min(width, int(np.ceil(bbox[2])) + margin)
    y1 = min(height, int(np.ceil(bbox[3])) + margin)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty crop for bbox {list(bbox)}")
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def encode_png(image: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("PNG encoding failed")
    return bytes(data.tobytes())


def decode_image(data: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("undecodable image")
    return np.asarray(image)


def bundle_crops(crops: Mapping[int, np.ndarray]) -> bytes:
    """A ZIP of PNGs named by region index (stored, not deflated: PNG is compressed)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for index, crop in crops.items():
            archive.writestr(f"{index:04d}.png", encode_png(crop))
    return buffer.getvalue()


def unbundle_crops(data: bytes) -> dict[int, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {
            int(name.split(".", 1)[0]): decode_image(archive.read(name))
            for name in archive.namelist()
        }
