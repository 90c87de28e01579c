"""workers.crops: crops with a clamped margin, and one bundle of crops per page."""

from __future__ import annotations

import zipfile
from io import BytesIO

import numpy as np
import pytest

from workers.crops import bundle_crops, crop_region, unbundle_crops


def _page(height: int = 100, width: int = 200) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_crop_adds_the_margin_inside_the_page() -> None:
    image = _page()
    crop = crop_region(image, [50, 40, 80, 60], margin=5)
    assert crop.shape == (30, 40, 3)
    np.testing.assert_array_equal(crop, image[35:65, 45:85])
    assert crop.flags["C_CONTIGUOUS"]


def test_crop_rounds_outwards_for_fractional_boxes() -> None:
    image = _page()
    crop = crop_region(image, [10.7, 20.2, 30.1, 40.9], margin=0)
    np.testing.assert_array_equal(crop, image[20:41, 10:31])


@pytest.mark.parametrize(
    ("bbox", "expected"),
    [
        ([2, 3, 20, 30], (slice(0, 38), slice(0, 28))),  # top-left corner
        ([180, 90, 199, 99], (slice(82, 100), slice(172, 200))),  # bottom-right corner
        ([-10, -10, 500, 500], (slice(0, 100), slice(0, 200))),  # box beyond the page
    ],
)
def test_crop_margin_is_clamped_to_the_page(
    bbox: list[float], expected: tuple[slice, slice]
) -> None:
    image = _page()
    crop = crop_region(image, bbox, margin=8)
    np.testing.assert_array_equal(crop, image[expected])


@pytest.mark.parametrize("bbox", [[300, 10, 400, 20], [10, 150, 20, 160], [50, 50, 50, 50]])
def test_empty_crop_is_an_error(bbox: list[float]) -> None:
    with pytest.raises(ValueError, match="empty crop"):
        crop_region(_page(), bbox, margin=0)


def test_crop_of_a_grayscale_page() -> None:
    image = _page()[:, :, 0].copy()
    assert crop_region(image, [0, 0, 10, 10], margin=2).shape == (12, 12)


def test_bundle_round_trip_is_lossless() -> None:
    image = _page()
    crops = {
        0: crop_region(image, [0, 0, 50, 50], 4),
        3: crop_region(image, [60, 10, 190, 90], 4),
        12: np.zeros((5, 7, 3), dtype=np.uint8),
    }
    data = bundle_crops(crops)
    with zipfile.ZipFile(BytesIO(data)) as archive:
        assert archive.namelist() == ["0000.png", "0003.png", "0012.png"]
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
    back = unbundle_crops(data)
    assert sorted(back) == [0, 3, 12]
    for index, crop in crops.items():
        assert back[index].dtype == np.uint8
        np.testing.assert_array_equal(back[index], crop)


def test_empty_bundle() -> None:
    assert unbundle_crops(bundle_crops({})) == {}


def test_crop_with_lines_grows_to_hold_its_lines_whole() -> None:
    from workers.crops import crop_with_lines

    image = _page(200, 400)
    # The layout box cuts the line's last characters off at x=150.
    line = ((20.0, 50.0), (180.0, 50.0), (180.0, 70.0), (20.0, 70.0))
    crop, quads = crop_with_lines(image, [30, 40, 150, 80], [line], margin=4)
    np.testing.assert_array_equal(crop, image[36:84, 16:184])
    assert quads == [((4.0, 14.0), (164.0, 14.0), (164.0, 34.0), (4.0, 34.0))]


def test_bundle_carries_each_regions_lines() -> None:
    from workers.crops import unbundle_lines

    crops = {0: _page(20, 30), 3: _page(10, 40)}
    lines = {3: [((1.0, 2.0), (30.0, 2.0), (30.0, 8.0), (1.0, 8.0))]}
    data = bundle_crops(crops, lines)
    assert set(unbundle_crops(data)) == {0, 3}
    assert unbundle_lines(data) == lines
    assert unbundle_lines(bundle_crops(crops)) == {}
