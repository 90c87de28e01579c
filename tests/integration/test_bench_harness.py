"""The control-plane benchmark's harness on real servers: `python -m benchmarks.worker`
installs the no-cost engines, plain `pagemill worker` refuses to be pointed at them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import services


def test_pagemill_worker_refuses_a_benchmark_engine(tmp_path: Path) -> None:
    for variable, role in (("PAGEMILL_LAYOUT_ENGINE", "cpu"), ("PAGEMILL_RECOGNIZER", "gpu")):
        env = services.process_env({variable: "nocost", "PAGEMILL_DATA_DIR": str(tmp_path)})
        result = subprocess.run(
            [str(services.BIN / "pagemill"), "worker", role],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode != 0
        assert "nocost" in result.stderr and "Input should be" in result.stderr


def test_control_plane_run_goes_through_the_nocost_engines(tmp_path: Path) -> None:
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import Job, Region
    from benchmarks.control_plane import measure
    from benchmarks.stack import private_stack

    with private_stack(tmp_path) as stack:
        result = measure(stack, pages=6, regions=3, per_doc=3, dpi=72, concurrency=1)
        with session_scope() as session:
            jobs = session.scalars(select(Job)).all()
            contents = session.scalars(select(Region.content).order_by(Region.index)).all()
    assert result["pages"] == 6 and result["documents"] == 2
    assert result["regions_per_s"] > 0 and set(result["cpu_ms_per_page"]) == {
        "cpu", "gpu", "redis", "postgres", "storage", "submitter",
    }  # fmt: skip
    assert all(v >= 0 for v in result["cpu_ms_per_page"].values())
    assert result["cpu_ms_per_page"]["cpu"] > 0 and result["cpu_ms_per_page"]["postgres"] > 0
    # warm-up (2 documents) and measured (2): every page recognized by the no-cost engine
    assert len(jobs) == 4 and {j.state for j in jobs} == {"succeeded"}
    assert len(contents) == 4 * 3 * 3
    assert set(contents) == {"region 0", "region 1", "region 2"}
