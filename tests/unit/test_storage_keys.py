"""The API serves figures only under the names image_link makes."""

from __future__ import annotations

import re

from app.storage import IMAGE_NAME_PATTERN, IMAGES_DIR, image_link, page_image_key


def test_every_image_link_matches_the_pattern_the_api_serves() -> None:
    for page, index in ((1, 0), (42, 7), (10_000, 9_999), (123_456, 12_345)):
        folder, name = image_link(page, index).split("/")
        assert folder == IMAGES_DIR
        assert re.fullmatch(IMAGE_NAME_PATTERN, name), name


def test_the_pattern_refuses_paths_and_other_files() -> None:
    for name in ("../document.md", "page-00001-region-0000.png/..", "document.json", "x.png"):
        assert not re.fullmatch(IMAGE_NAME_PATTERN, name), name


def test_page_images_are_results_of_their_tenant_and_job() -> None:
    """Under results/ (kept after assembly deletes work/), one per page, named by number."""
    assert page_image_key("acme", "ab" * 16, 7) == f"acme/results/{'ab' * 16}/pages/page-00007.jpg"
    assert page_image_key("acme", "j", 7) != page_image_key("acme", "j", 8)
