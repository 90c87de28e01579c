#!/usr/bin/env bash
# Creates the project's virtual environment with everything the CLI, API, CPU workers and
# tests need. Idempotent: re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade "pip==25.3"
"$VENV/bin/python" -m pip install -q -e ".[api,cpu,dev]"
# rapidocr depends on opencv-python (GUI build) as well as the headless one; both install the
# same cv2 module, so keep only the headless build.
if "$VENV/bin/python" -m pip show -q opencv-python >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip uninstall -q -y opencv-python
  "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "opencv-python-headless==5.0.0.93"
fi
# PDFs often use CJK fonts without embedding them; pdfium then needs the system's fonts, or
# those pages render without their glyphs. Installed when missing and we may (root + apt).
if ! ls /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq fonts-noto-cjk >/dev/null 2>&1 \
      || { apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 && apt-get -o DPkg::Lock::Timeout=600 install -y -qq fonts-noto-cjk >/dev/null; }
  else
    echo "warning: fonts-noto-cjk is not installed; CJK pages with non-embedded fonts" \
         "will render without their glyphs" >&2
  fi
fi
echo "installed into $VENV"
