"""The cluster path for real: the tiny embedded suite through ``--profile slurm`` on a live
single-node SLURM cluster (tests/cluster/cluster.sh), every job submitted with sbatch.

The ``slurm`` tier, only with ``DICAP_SLURM_TESTS=1`` (conftest.py): ``bash scripts/test.sh`` then
runs it with the others, ``-m slurm`` alone.  Needs root (or the Debian packages slurm-wlm munge
slurmdbd mariadb-server already installed) on Linux.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from snakemake_runner import ENV, REPO, job_counts, snakemake, tiny_args

CLUSTER = REPO / "tests" / "cluster" / "cluster.sh"
GPU_RULES = {"counterfactual_shard", "train_prompt"}


# The real profile (slurm/config.yaml) with the test cluster's few overrides on top.
PROFILE = ("--profile", "slurm", "--workflow-profile", str(REPO / "tests" / "cluster" / "profile"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Bring the cluster up for this module, and down again, stopping only what it started."""
    state = tmp_path_factory.mktemp("slurm-state")
    env = {**{k: v for k, v in ENV.items() if k != "SLURM_CONF"}, "DICAP_SLURM_STATE": str(state)}
    up = subprocess.run(["bash", str(CLUSTER), "up"], env=env, capture_output=True, text=True, timeout=600)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        yield env
    finally:
        subprocess.run(["bash", str(CLUSTER), "down"], env=env, capture_output=True, timeout=120)


def sacct_jobs(env: dict, run_id: str) -> list[dict[str, str]]:
    """Every job (array tasks one by one) the SLURM run named ``run_id`` submitted."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "--name", run_id, "-S", "now-1days", "-o", "JobID,Comment,AllocTRES,State"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    rows = [dict(zip(("id", "comment", "tres", "state"), line.split("|"))) for line in out.stdout.splitlines() if line]
    for row in rows:
        # The executor plugin comments each job "rule_<name>" or "rule_<name>_wildcards_<...>".
        row["rule"] = re.sub(r"_wildcards_.*$", "", row["comment"]).removeprefix("rule_")
    return rows


def test_tiny_suite_on_slurm_equals_local_run(cluster, tiny_run, tmp_path):
    args = [*PROFILE, "results/table1.csv", *tiny_args(tmp_path)]
    plan = snakemake(*args, "-n", env=cluster)
    assert plan.returncode == 0, (plan.stdout + plan.stderr)[-3000:]
    planned = job_counts(plan.stdout)

    out = snakemake(*args, env=cluster, timeout=1500)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-5000:]

    # Every planned job went through sbatch, none ran in this process.
    assert "localrule" not in log
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    jobs = sacct_jobs(cluster, run_id)
    ran: dict[str, int] = {}
    for job in jobs:
        ran[job["rule"]] = ran.get(job["rule"], 0) + 1
    assert ran == planned, (ran, planned)
    assert all(job["state"] == "COMPLETED" for job in jobs), jobs
    # GPU rules asked the scheduler for a GPU and got one; the others, and zeroshot's prompt job
    # (it learns nothing: Plan.learner_gpus), did not ask.
    for job in jobs:
        wants_gpu = job["rule"] in GPU_RULES and "_zeroshot_" not in job["comment"]
        assert ("gres/gpu=1" in job["tres"]) == wants_gpu, job

    # The same config and seeds give the same table, byte for byte, on the cluster and locally.
    assert (tmp_path / "results" / "table1.csv").read_bytes() == (tiny_run / "results" / "table1.csv").read_bytes()


def test_unknown_partition_fails_naming_it_and_writes_nothing(cluster, tmp_path):
    args = [*PROFILE, "results/table1.csv", *tiny_args(tmp_path), "--default-resources", "slurm_partition=no_such_partition"]
    out = snakemake(*args, env=cluster, timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode != 0
    lines = [line for line in log.splitlines() if "no_such_partition" in line and "artition" in line]
    assert lines, log[-3000:]
    assert not (tmp_path / "build").exists() and not (tmp_path / "results").exists()
