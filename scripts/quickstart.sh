#!/usr/bin/env bash
# One command on a fresh machine: install everything, then run the live pipeline on the built-in demo conversation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
exec hbaf-edge run --source demo --output demo_events.jsonl "$@"
