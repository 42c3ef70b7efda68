#!/usr/bin/env bash
# Installs everything hbaf-edge needs on a Debian/Ubuntu machine (or JetPack), skipping what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
for bin in espeak-ng sox ffmpeg; do command -v "$bin" >/dev/null 2>&1 || need+=("$bin"); done
ldconfig -p 2>/dev/null | grep -q 'libportaudio.so.2' || need+=(libportaudio2)
ldconfig -p 2>/dev/null | grep -q 'libsndfile.so.1' || need+=(libsndfile1)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# torch first, and only if missing: on Jetson it comes from NVIDIA's wheels and must not be replaced.
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".[dev]"
