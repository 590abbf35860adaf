#!/usr/bin/env bash
# Fetch the shared artifacts (data, splits, backbones, counterfactuals, CLIP features; the paper
# suite's download markers, prompts and per-seed metrics too) from the DVC remote, then tell
# Snakemake they are current.
#   bash scripts/pull.sh            # the embedded suite (dvc.yaml)
#   bash scripts/pull.sh paper      # the paper suite (paper/dvc.yaml), pushed from a cluster
# The paper suite's evaluations come too: `evaluate` scores the pixel learners (MaPLe) on the
# test images, which stay on the cluster, so a laptop builds the tables from the per-seed metrics.
# Further arguments go to `dvc pull` (for example `-r myremote`).
#
# Why not `dvc pull` alone: DVC restores files with new modification times, in no particular
# order, and without Snakemake's metadata.  Snakemake reads "input newer than output" as a
# change and would recompute the counterfactuals (leaving out the mtime rerun trigger does
# not stop it; measured with Snakemake 9.27).  `snakemake --touch artifacts` marks the pulled
# files as up to date in the DAG's order, without running a job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$(realpath -m "${DICAP_VENV:-.venv}")/bin:$PATH" DVC_NO_ANALYTICS=1

# The stages that hold the shared artifacts must come; the others (the tables, the ablations)
# come where somebody recorded and pushed them, and are regenerated where not: a pull of the
# whole pipeline fails on a stage nobody recorded, and must not stop the touch below.
# Each touch pass is one Snakemake target list; the paper suite's second marks the prompts and
# per-seed metrics current, every job up to the evaluations (the tables follow from them).
pipeline=dvc.yaml stages=(dvc.yaml:artifacts) configs=(--configfile config.yaml)
touches=("artifacts")
if [[ ${1:-} == paper ]]; then
  shift
  pipeline=paper/dvc.yaml configs=(--configfile config.yaml config.paper.yaml)
  stages=(paper/dvc.yaml:source paper/dvc.yaml:artifacts paper/dvc.yaml:evaluations)
  touches+=("all --until evaluate evaluate_task")
fi
dvc pull "$@" "${stages[@]}"
if ! dvc pull "$@" "$pipeline" > /dev/null 2>&1; then
  echo "pull.sh: some stages (tables, ablations) are not on the remote: Snakemake regenerates them" >&2
fi
# One touch pass left the merges behind once (CI, with an ancient() input since removed): the
# pulled files' mtimes differ by microseconds in no order.  Touching is cheap; looking again
# until nothing is planned makes the pull's promise hold whatever Snakemake's order.
# Touch until a dry run plans nothing (targets first: --until and --configfile take all that follows).
for touch in "${touches[@]}"; do
  read -ra targets <<< "$touch"
  for pass in 1 2 3 4; do
    # Read whole (`snakemake | grep -q` fails under pipefail when grep stops early); with
    # --until, an empty plan is a job table of total 0, not "Nothing to be done".
    plan=$(snakemake "${targets[@]}" -n "${configs[@]}" 2>&1 || true)
    if grep -qE "^Nothing to be done|^total +0$" <<< "$plan"; then break; fi
    if [[ $pass == 4 ]]; then
      echo "pull.sh: snakemake still plans jobs for the pulled files; see: snakemake $touch -n ${configs[*]}" >&2
      exit 1
    fi
    snakemake "${targets[@]}" --cores 1 --touch "${configs[@]}" > /dev/null
  done
done
echo "pull.sh: pulled files marked current; snakemake -n now plans only what they do not cover" >&2
