#!/usr/bin/env bash
# Installs what is missing (into .venv/, see scripts/install.sh), then runs the whole test suite
# with that environment's python; no `source .venv/bin/activate` needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=$(bash scripts/install.sh --print-python)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$PY" -m pytest -q -p no:cacheprovider "$@"
