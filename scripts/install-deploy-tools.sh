#!/usr/bin/env bash
# What the deployment tests (tests/deploy) run besides Python packages: Debian's
# docker-compose 1.29, which validates compose.yaml offline (`docker-compose config -q`).
# kubernetes-validate and KEDA's CRD models come with the dev extra (scripts/install.sh).
# Installed when missing and we may (root + apt).
set -euo pipefail
if command -v docker-compose >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: cannot install docker-compose here (needs root and apt)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 install -y -qq docker-compose >/dev/null 2>&1 \
  || { apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 && apt-get -o DPkg::Lock::Timeout=600 install -y -qq docker-compose >/dev/null; }
echo "installed $(docker-compose version --short 2>/dev/null || echo docker-compose)"
