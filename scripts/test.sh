#!/usr/bin/env bash
# Install (if needed) and run the test suite: by default all four tiers (tests/README.md), each test
# once: unit (in-process, about a minute), workflow (dry runs, lint, README commands), pipeline (the
# tiny suite end to end) and slurm (a live single-node SLURM cluster).  Bare `pytest` runs the unit
# tier only (pyproject.toml).  Arguments go to pytest, after ours, so they win:
#   bash scripts/test.sh -m unit        # one tier;  -m "unit or workflow": two
# Safe on any machine: it installs Python packages into the venv only.  The slurm tier installs
# Debian packages (as root) and starts daemons, so it runs only with DICAP_SLURM_TESTS=1 (CI sets it,
# .ci/run); otherwise its tests are skipped with one line saying so (tests/slurm/conftest.py).
# Fails on any failure, including pytest's exit code 5 ("no tests collected") and a test outside
# the tier folders (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=$(realpath -m "${DICAP_VENV:-.venv}")
export PATH="$venv/bin:$PATH" DVC_NO_ANALYTICS=1
"$venv/bin/python" -m pytest -q -m "unit or workflow or pipeline or slurm" "$@"
