"""The API serves figures only under the names image_link makes."""

from __future__ import annotations

import re

from app.storage import IMAGE_NAME_PATTERN, IMAGES_DIR, image_link


def test_every_image_link_matches_the_pattern_the_api_serves() -> None:
    for page, index in ((1, 0), (42, 7), (10_000, 9_999), (123_456, 12_345)):
        folder, name = image_link(page, index).split("/")
        assert folder == IMAGES_DIR
        assert re.fullmatch(IMAGE_NAME_PATTERN, name), name


def test_the_pattern_refuses_paths_and_other_files() -> None:
    for name in ("../document.md", "page-00001-region-0000.png/..", "document.json", "x.png"):
        assert not re.fullmatch(IMAGE_NAME_PATTERN, name), name
