#!/usr/bin/env bash
# Install (if needed) and run the whole test suite.  Fails on any failure, including
# pytest's exit code 5 ("no tests collected").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=$(realpath -m "${DICAP_VENV:-.venv}")
export PATH="$venv/bin:$PATH" HF_HUB_OFFLINE=1 DVC_NO_ANALYTICS=1
"$venv/bin/python" -m pytest -q "$@"
