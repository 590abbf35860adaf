"""DVC over the workflow: a lock that matches the code and config.  The cluster-to-laptop round
trip is tests/pipeline/test_dvc_round_trip.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from dicap import layout
from dicap.code_version import ROOT, job_sources
from snakemake_runner import BIN, ENV, REPO

DVC = str(BIN / "dvc")
DVC_ENV = {**ENV, "DVC_NO_ANALYTICS": "1", "DICAP_VENV": str(BIN.parent)}


# The jobs behind `snakemake artifacts`: their code must be a dependency of DVC's stage.
ARTIFACT_JOBS = ("prepare_dataset", "make_split", "clip_backbone", "diffusion_backbone", "guide_classifier",
                 "oracle", "counterfactual_shard", "merge_counterfactuals", "encode_train_features", "encode_eval_features")


def run(*args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    out = subprocess.run(list(args), cwd=cwd, env=DVC_ENV, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args} failed:\n{(out.stdout + out.stderr)[-4000:]}"
    return out


def test_dvc_lock_matches_the_committed_code_and_config():
    """Every stage in dvc.lock was run with the code and config as they are now (outputs may be absent)."""
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    assert {"artifacts", "results"} <= set(lock)
    status = json.loads(run(DVC, "status", "--json", "dvc.yaml", cwd=REPO).stdout or "{}")
    stale = {}
    for stage, changes in status.items():
        if stage not in lock:
            continue
        for change in changes:
            if change == "changed command" or (isinstance(change, dict) and "changed params" in change):
                stale[stage] = change
            elif isinstance(change, dict) and "changed deps" in change:
                # artifacts built on another machine may differ; the source and config may not
                code = {p: s for p, s in change["changed deps"].items() if not p.startswith("build/")}
                if code:
                    stale[stage] = code
    assert not stale, f"dvc.lock is stale, run the suite and `dvc commit` (docs/dvc.md): {stale}"


def test_artifact_stage_depends_on_all_the_code_it_runs():
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["artifacts"]
    deps = [REPO / d for d in stage["deps"]]
    for job in ARTIFACT_JOBS:
        sources = job_sources(job)
        for path in {sources.module, *sources.files}:
            assert any(path == d or d in path.parents for d in deps), f"{path.relative_to(ROOT)} ({job})"


# The jobs whose outputs the paper suite's `evaluations` stage shares: what a laptop cannot
# recompute (evaluate reads the test images), and everything upstream of it that is no artifact.
EVALUATION_OUTPUTS = (layout.PROMPT, layout.PROMPT_HISTORY, layout.METRICS, layout.TASK_PROMPT, layout.TASK_METRICS)


def test_paper_evaluations_stage_owns_what_the_evaluations_write_and_pull_touches_its_targets():
    stage = yaml.safe_load((REPO / "paper" / "dvc.yaml").read_text())["stages"]["evaluations"]
    outs = {next(iter(out)) for out in stage["outs"]}
    assert all(next(iter(out.values())).get("persist") for out in stage["outs"])
    for template in EVALUATION_OUTPUTS:
        path = layout.Build("paper")(template)
        assert any(path.startswith(out + "/") for out in outs), f"{path} is in no output of paper/dvc.yaml:evaluations"
    targets = stage["cmd"].rsplit("${snakemake} ", 1)[1]
    assert "--until evaluate evaluate_task" in targets and not targets.endswith("--configfile")
    pull = (REPO / "scripts" / "pull.sh").read_text()
    assert "paper/dvc.yaml:evaluations" in pull and f'touches+=("{targets}")' in pull, targets
