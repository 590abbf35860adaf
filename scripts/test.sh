#!/usr/bin/env bash
# Install (if needed) and run the whole test suite: the fast unit tests, the tiny end-to-end
# pipeline runs (-m pipeline) and the live SLURM cluster (-m slurm).  Bare `pytest` runs the
# fast tests only (pyproject.toml); the -m below selects every test, and a -m given to this
# script comes later and wins.  Fails on any failure, including pytest's exit code 5 ("no
# tests collected").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=$(realpath -m "${DICAP_VENV:-.venv}")
export PATH="$venv/bin:$PATH" DVC_NO_ANALYTICS=1
"$venv/bin/python" -m pytest -q -m "pipeline or slurm or not (pipeline or slurm)" "$@"
