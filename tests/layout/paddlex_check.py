"""Run by tests/layout/test_paddlex_install.py inside .venv-paddlex: loads PaddleX's layout
predictor as far as it goes without weights, through pagemill's own engine.

Prints one JSON line: what was imported and how far `create_model` got."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(model_dir: str) -> None:
    import paddle
    import paddlex
    from paddlex.inference.models.object_detection.predictor import DetRunnerPredictor
    from paddlex.inference.models.object_detection.processors import ReadImage

    ReadImage(format="RGB")  # PaddleX checks its OpenCV dependency when this is built

    from workers.engines.layout_paddlex import PaddleXLayoutEngine

    engine = PaddleXLayoutEngine(model_dir, device="cpu")
    outcome: dict[str, object] = {
        "paddle": paddle.__version__,
        "paddlex": paddlex.__version__,
        "predictor": DetRunnerPredictor.__name__,
        "engine": engine.version,
    }
    try:
        engine.warmup()  # paddlex.create_model on the folder: stops at the fake weights
        outcome["loaded"] = True
    except Exception as exc:
        outcome["loaded"] = False
        outcome["error_type"] = type(exc).__name__
        outcome["error"] = str(exc)[:500]
    print(json.dumps(outcome))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main(sys.argv[1])
