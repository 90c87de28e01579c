"""The whole pipeline through real Redis, Postgres, SeaweedFS and worker processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import jobs
from app.storage import get_storage
from app.submit import submit_file
from tests.conftest import wait_for_jobs
from tests.support import documents
from tests.support.text import character_error_rate

pytestmark = pytest.mark.integration


def _result(job_id: str, fmt: str) -> bytes:
    job = jobs.get_job(job_id)
    assert job is not None
    key = job.result_markdown_key if fmt == "md" else job.result_json_key
    assert key is not None, f"job {job_id} has no {fmt} result ({job.state}: {job.error})"
    return get_storage().get(key)


def test_scanned_pdf_is_recognized_under_ten_percent_cer(
    stack: dict[str, str], tmp_path: Path
) -> None:
    pdf = documents.make_scanned_pdf(
        tmp_path / "report.pdf", [(documents.SAMPLE_TITLE, documents.SAMPLE_PARAGRAPHS)]
    )
    job_id = submit_file(pdf).job_id
    assert wait_for_jobs([job_id]) == {job_id: "succeeded"}

    markdown = _result(job_id, "md").decode()
    cer = character_error_rate(documents.sample_text(), markdown)
    assert cer < 0.10, f"CER {cer:.3f}\n{markdown}"

    document = json.loads(_result(job_id, "json"))
    (page,) = document["pages"]
    assert page["page"] == 1 and page["width"] > 1000 and page["height"] > 1000
    assert page["regions"], "layout found no regions"
    for region in page["regions"]:
        assert set(region) >= {
            "index",
            "label",
            "task",
            "bbox",
            "bbox_norm",
            "content",
            "source",
            "engine",
        }
        assert all(0 <= v <= 1000 for v in region["bbox_norm"])
    ocr = [r for r in page["regions"] if r["source"] == "ocr"]
    assert ocr and all(r["engine"].startswith("rapidocr") for r in ocr)


def test_bad_inputs_fail_alone_and_the_batch_goes_on(stack: dict[str, str], tmp_path: Path) -> None:
    good = documents.make_scanned_pdf(tmp_path / "good.pdf", [(None, ["A good page of text."])])
    digital = documents.make_born_digital_pdf(tmp_path / "digital.pdf", [(None, ["Locked text."])])
    bad = {
        "corrupt.pdf": documents.make_corrupt_pdf(tmp_path / "corrupt.pdf", digital),
        "encrypted.pdf": documents.make_encrypted_pdf(tmp_path / "encrypted.pdf", digital),
        "empty.pdf": tmp_path / "empty.pdf",
        "notes.txt": tmp_path / "notes.txt",
        "program.pdf": tmp_path / "program.pdf",
    }
    bad["empty.pdf"].write_bytes(b"")
    bad["notes.txt"].write_text("just some text, not a document\n")
    bad["program.pdf"].write_bytes(b"\x7fELF\x02\x01\x01" + bytes(200))
    batch_id = jobs.create_batch("mixed")
    good_id = submit_file(good, batch_id=batch_id).job_id
    bad_ids = {name: submit_file(path, batch_id=batch_id).job_id for name, path in bad.items()}

    states = wait_for_jobs([good_id, *bad_ids.values()])
    assert states[good_id] == "succeeded"
    expected = {
        "corrupt.pdf": "corrupt",
        "encrypted.pdf": "encrypted",
        "empty.pdf": "empty",
        "notes.txt": "plain text",
        "program.pdf": "executable",
    }
    for name, job_id in bad_ids.items():
        job = jobs.get_job(job_id)
        assert job is not None
        assert job.state == "failed", name
        assert job.error and expected[name] in job.error, (name, job.error)


def test_images_and_multipage_tiff(stack: dict[str, str], tmp_path: Path) -> None:
    pages = [(None, ["First page says hello."]), (None, ["Second page says goodbye."])]
    files = {
        "scan.png": documents.make_image(tmp_path / "scan.png", "PNG", None, pages[0][1]),
        "scan.jpg": documents.make_image(tmp_path / "scan.jpg", "JPEG", None, pages[0][1]),
        "scan.webp": documents.make_image(tmp_path / "scan.webp", "WEBP", None, pages[0][1]),
        "scan.tiff": documents.make_multipage_tiff(tmp_path / "scan.tiff", pages),
    }
    ids = {name: submit_file(path).job_id for name, path in files.items()}
    states = wait_for_jobs(list(ids.values()))
    assert set(states.values()) == {"succeeded"}, states
    for name, job_id in ids.items():
        text = _result(job_id, "md").decode().lower()
        assert "hello" in text, (name, text)
    tiff = jobs.get_job(ids["scan.tiff"])
    assert tiff is not None and tiff.pages_total == 2
    assert "goodbye" in _result(ids["scan.tiff"], "md").decode().lower()


def test_oversized_upload_fails_with_the_limit_in_its_error(
    stack: dict[str, str], tmp_path: Path
) -> None:
    from tests.support.services import configure

    big = tmp_path / "big.pdf"
    big.write_bytes(b"%PDF-1.7\n" + bytes(4096))
    configure({**stack, "PAGEMILL_MAX_UPLOAD_BYTES": "1024"})
    try:
        job_id = submit_file(big).job_id
    finally:
        configure(stack)
    job = jobs.get_job(job_id)
    assert job is not None and job.state == "failed"
    assert job.error and "too large" in job.error and "1024" in job.error


def test_born_digital_pages_in_auto_mode_never_wait_for_the_recognizer(
    stack: dict[str, str], tmp_path: Path
) -> None:
    from app.db import session_scope
    from app.models import Page

    pdf = documents.make_born_digital_pdf(
        tmp_path / "digital.pdf",
        [
            (documents.SAMPLE_TITLE, documents.SAMPLE_PARAGRAPHS),
            (None, documents.SAMPLE_PARAGRAPHS),
        ],
    )
    job_id = submit_file(pdf).job_id
    assert wait_for_jobs([job_id]) == {job_id: "succeeded"}
    with session_scope() as session:
        pages = session.query(Page).filter_by(job_id=job_id).all()
        assert len(pages) == 2
        for page in pages:
            assert page.text_layer == "trusted"
            assert page.recognize_attempts == 0 and page.recognize_ms is None
    document = json.loads(_result(job_id, "json"))
    sources = {r["source"] for p in document["pages"] for r in p["regions"]}
    assert "ocr" not in sources and "text_layer" in sources
    cer = character_error_rate(
        "\n".join(documents.SAMPLE_PARAGRAPHS), _result(job_id, "md").decode().split("page 2")[-1]
    )
    assert cer < 0.05, cer


def test_a_worker_refuses_an_unmigrated_database(stack: dict[str, str], tmp_path: Path) -> None:
    """Even started as a plain `celery worker`, without pagemill's CLI in front."""
    import os
    import subprocess
    import sys

    from tests.support.services import postgres_database

    with postgres_database() as empty:
        env = {**os.environ, **stack, "PAGEMILL_DATABASE_URL": empty}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.tasks",
                "worker",
                "-Q",
                "cpu",
                "--pool",
                "solo",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2
    assert "pagemill migrate" in done.stderr
