#!/usr/bin/env bash
# One command on a fresh machine: install everything (into .venv/, see scripts/install.sh), then run
# the live pipeline on the built-in demo conversation with that environment's hbaf-edge.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=$(bash scripts/install.sh --print-python)
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
args=(run --source demo --output demo_events.jsonl "$@")
if [ -x "$(dirname "$PY")/hbaf-edge" ]; then
  exec "$(dirname "$PY")/hbaf-edge" "${args[@]}"
fi
# console scripts elsewhere (HBAF_NO_VENV=1 with a python whose scripts go to another folder)
exec "$PY" -c 'import sys; from importlib.metadata import entry_points
sys.argv[0] = "hbaf-edge"; sys.exit(entry_points(group="console_scripts")["hbaf-edge"].load()())' "${args[@]}"
