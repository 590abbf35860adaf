"""DVC over the workflow: a lock that matches the code and config.  The cluster-to-laptop round
trip is tests/pipeline/test_dvc_round_trip.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from dicap import layout
from dicap.code_version import ROOT, job_sources
from dicap.config import validate_config, with_defaults
from dicap.plan import Plan
from snakemake_runner import BIN, ENV, REPO, TINY_CONFIGS, snakemake

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


# The ablations whose variants generate counterfactuals or encode features of their own (the
# prompt ablations reuse main's); what they make beyond `all` is theirs, never DVC's.
FILE_ABLATIONS = ("ablation_guidance_scale", "ablation_sampling", "ablation_true_cf")


def planned_outputs(configs: tuple[str, ...], workdir: Path, *targets: str) -> set[str]:
    """Every output of the jobs a dry run of ``targets`` plans in the empty ``workdir``."""
    out = snakemake("-n", *targets, "-s", str(REPO / "Snakefile"), "--configfile", *configs, "--directory", str(workdir))
    assert out.returncode == 0, out.stderr[-2000:]
    return {o.strip() for line in re.findall(r"(?m)^\s+output: (.+)$", out.stdout) for o in line.split(",")}


def dvc_ignored(paths: list[str]) -> set[str]:
    """The paths this checkout's .dvcignore hides from DVC (DVC's own matcher; the files need not exist)."""
    out = subprocess.run([DVC, "check-ignore", *paths], cwd=REPO, env=DVC_ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 1), out.stderr[-2000:]  # 1: none ignored
    return set(out.stdout.split())


@pytest.mark.parametrize("configs", [(str(REPO / "config.yaml"),), TINY_CONFIGS], ids=["default", "tiny"])
def test_the_artifacts_stage_holds_every_counterfactual_and_feature_all_reads_and_no_ablations(configs, tmp_path):
    """After `dvc pull` of the artifacts, `snakemake` (all) must plan no shard or feature job
    (issue 29.1): every counterfactual and training feature file of `all`'s DAG is an artifact
    target and not hidden by .dvcignore; an ablation's own variants are neither."""
    config: dict = {}
    for path in configs:  # as tiny_checkout merges them
        for key, value in yaml.safe_load(Path(path).read_text()).items():
            config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    plan = Plan(validate_config(with_defaults(config)))
    targets = set(plan.artifact_targets())
    folders = tuple(plan.build(f"{folder}/") for folder in ("counterfactuals", "features"))
    needed = {o for o in planned_outputs(configs, tmp_path / "all", "all") if o.startswith(folders)}
    ablations = {o for o in planned_outputs(configs, tmp_path / "ablations", *FILE_ABLATIONS) if o.startswith(folders)}
    assert {o for o in needed if f"/{layout.MAIN}/" not in o}, "the grids and the controls need other variants"
    assert needed - targets == set(), "`all` reads these, but `snakemake artifacts` does not make them"
    assert {o for o in targets if o.startswith(folders)} - needed == set(), "artifacts `all` does not read"
    only_ablations = ablations - needed
    assert only_ablations and not only_ablations & targets
    ignored = dvc_ignored(sorted(targets | only_ablations))
    assert not ignored & targets, "DVC would not record these artifacts"
    # The true_cf ablation's features on a dataset without the controls cannot be told from the
    # controls' by a pattern (.dvcignore): recorded where present (docs/dvc.md).
    hidden = {o for o in only_ablations if f"/{layout.TRUE_CF}/" not in o or "/counterfactuals/" in o}
    assert hidden and hidden <= ignored, sorted(hidden - ignored)[:5]
