#!/usr/bin/env bash
# What the web page's test (tests/integration/test_web.py) drives: Debian's headless
# Chromium and its chromedriver. Selenium itself comes with the dev extra (scripts/install.sh).
# Installed when missing and we may (root + apt).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: cannot install chromium here (needs root and apt)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium chromium-driver >/dev/null 2>&1 \
  || { apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 && apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium chromium-driver >/dev/null; }
echo "installed $(chromium --version 2>/dev/null || echo chromium)"
