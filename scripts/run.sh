#!/usr/bin/env bash
# Install (if needed) and run the workflow; by default the embedded suite end to end.
#   bash scripts/run.sh                     # everything: results/, ending with results/reproduction.md
#   bash scripts/run.sh results/table1.csv  # any target; extra snakemake flags work too
#
# A run that was killed outright (kill -9, a lost SSH session) leaves Snakemake's lock and
# half-written outputs behind.  This script continues such a run with no manual step: it
# unlocks the working directory when no Snakemake process is still running there, and always
# passes --rerun-incomplete.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$(realpath -m "${DICAP_VENV:-.venv}")/bin:$PATH"

workdir=.
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    --directory | -d) workdir=${args[i + 1]} ;;
    --directory=*) workdir=${args[i]#*=} ;;
  esac
done

# True when a live snakemake process (other than this script) has $workdir as its working directory.
snakemake_running_in() {
  local dir pid
  dir=$(realpath "$1")
  for pid in $(pgrep -f snakemake || true); do
    [[ $pid == "$$" ]] && continue
    [[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$dir" ]] && return 0
  done
  return 1
}

if compgen -G "$workdir/.snakemake/locks/*" > /dev/null; then
  if snakemake_running_in "$workdir"; then
    echo "run.sh: another Snakemake run is working in $workdir; wait for it to end" >&2
    exit 1
  fi
  echo "run.sh: the previous run in $workdir was killed; unlocking and continuing it" >&2
  snakemake "$@" --unlock > /dev/null
fi
exec snakemake --cores "${CORES:-$(nproc)}" --rerun-incomplete "$@"
