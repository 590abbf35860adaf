#!/usr/bin/env bash
# Install (if needed) and run the workflow; by default the embedded suite end to end.
#   bash scripts/run.sh                     # everything: results/table1.csv and figures
#   bash scripts/run.sh results/table1.csv  # any target; extra snakemake flags work too
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1
exec snakemake --cores "${CORES:-$(nproc)}" "$@"
