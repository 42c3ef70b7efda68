#!/usr/bin/env bash
# Installs what is missing (into .venv/, see scripts/install.sh), then runs the whole test suite
# with that environment's python; no `source .venv/bin/activate` needed.
# Two pytest workers (HBAF_TEST_WORKERS, 0 = in this process), each taking whole test files, so a
# file's fixtures are built once, the longest files first (tests/conftest.py). On the 2-core
# machine: 574 tests in 11 min 4 s with two workers; one worker took 14-16 min for 490 of them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=$(bash scripts/install.sh --print-python)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
workers=${HBAF_TEST_WORKERS:-2}
if [ "$workers" = 0 ]; then
  exec "$PY" -m pytest -q -p no:cacheprovider "$@"
fi
exec "$PY" -m pytest -q -p no:cacheprovider -n "$workers" --dist loadfile "$@"
