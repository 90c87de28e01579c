"""The `openai` recognizer's server goes away mid-job: the page waits in the queue and
finishes when the server is back; no region is marked failed, no attempt is used up."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import jobs
from app.db import session_scope
from app.models import Page, Region
from app.schemas import JobOptions
from app.submit import submit_file
from tests.conftest import wait_for_jobs
from tests.support import documents, services, vllm_serve
from tests.support.tiny_glmocr import TARGETS, build_tiny_glmocr

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
SERVED = "tiny-glmocr"


class Server:
    def __init__(self, model: Path, folder: Path) -> None:
        self.port = vllm_serve.free_port()
        self.args = vllm_serve.tiny_server_args(model, self.port, SERVED)
        self.folder = folder
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.process: object = None

    def start(self) -> None:
        log = self.folder / "server.log"
        self.process = vllm_serve.start(self.args, scratch=self.folder, log_path=log)
        vllm_serve.wait_ready(self.process, self.base_url, timeout=300, log_path=log)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.process is not None:
            vllm_serve.stop(self.process)  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[Server]:
    # A short folder: vLLM's ZMQ socket paths must stay under 107 characters.
    folder = Path(tempfile.mkdtemp(prefix="pm-srv-"))
    running = Server(build_tiny_glmocr(ROOT / ".scratch" / "tiny-glmocr"), folder)
    running.start()
    yield running
    running.stop()
    shutil.rmtree(folder, ignore_errors=True)


def _log_has(log: Path, needle: str) -> bool:
    return log.exists() and needle in log.read_text(errors="replace")


def test_server_outage_mid_job_waits_and_finishes(
    stack_env: dict[str, str], server: Server, tmp_path: Path
) -> None:
    env = {
        **stack_env,
        **services.broker_env("openai-outage"),
        "PAGEMILL_DATA_DIR": str(tmp_path / "data"),
        "PAGEMILL_RECOGNIZER": "openai",
        "PAGEMILL_OPENAI_BASE_URL": server.base_url,
        "PAGEMILL_OPENAI_MODEL": SERVED,
        "PAGEMILL_OPENAI_MAX_RETRIES": "1",
        "PAGEMILL_OPENAI_TIMEOUT_SECONDS": "30",
        "PAGEMILL_RETRY_BACKOFF_SECONDS": "0.5",
        "PAGEMILL_MAX_TOKENS": "64",
        "PAGEMILL_MIN_PIXELS": str(28 * 28 * 2),
        "PAGEMILL_MAX_PIXELS": str(28 * 28 * 8),
    }
    services.configure(env)
    logs = tmp_path / "logs"
    try:
        with services.workers(env, {"cpu": 1, "gpu": 2}, log_dir=logs):
            deadline = time.monotonic() + 120
            while not _log_has(logs / "worker-gpu.log", " ready."):
                assert time.monotonic() < deadline, "the gpu worker never became ready"
                time.sleep(0.5)
            server.stop()  # the server goes away after the worker warmed up

            pdf = documents.make_scanned_pdf(
                tmp_path / "scan.pdf", [(documents.SAMPLE_TITLE, documents.SAMPLE_PARAGRAPHS)]
            )
            job_id = submit_file(pdf, options=JobOptions(text_mode="ocr")).job_id
            deadline = time.monotonic() + 120
            while not _log_has(logs / "worker-gpu.log", "transient error in pagemill.recognize"):
                assert time.monotonic() < deadline, "recognition never met the outage"
                time.sleep(0.5)
            assert jobs.get_job(job_id).state == "running"  # type: ignore[union-attr]

            server.start()
            assert wait_for_jobs([job_id], timeout=300) == {job_id: "succeeded"}
    finally:
        services.configure(stack_env)  # same database and storage, the stack's broker

    with session_scope() as session:
        page = session.get(Page, (job_id, 1))
        assert page is not None
        assert page.recognize_attempts <= 1, "the outage used up recognition attempts"
        regions = session.query(Region).filter_by(job_id=job_id).all()
    recognized = [r for r in regions if r.task in ("text", "formula", "table")]
    assert recognized and all(r.state == "done" for r in recognized)
    assert all(r.engine and r.engine.startswith("openai/") for r in recognized)
    assert any(r.content == TARGETS["Text Recognition:"] for r in recognized)
