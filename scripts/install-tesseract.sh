#!/usr/bin/env bash
# Tesseract from Debian: the baseline the accuracy benchmark compares against (and its
# tests). Not part of pagemill itself. Installed when missing and we may (root + apt).
set -euo pipefail
PACKAGES="tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim tesseract-ocr-chi-tra tesseract-ocr-jpn"
if command -v tesseract >/dev/null 2>&1 && tesseract --list-langs 2>/dev/null | grep -qx jpn; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: cannot install tesseract here (needs root and apt): install $PACKAGES" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
apt-get -o DPkg::Lock::Timeout=600 install -y -qq $PACKAGES >/dev/null 2>&1 \
  || { apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 && apt-get -o DPkg::Lock::Timeout=600 install -y -qq $PACKAGES >/dev/null; }
echo "installed tesseract $(tesseract --version 2>&1 | head -1)"
