"""The paper suite without internet or GPU: its whole DAG planned through the cluster profile."""

from __future__ import annotations

import re

from dicap.config import load_config
from snakemake_runner import REPO, job_counts, snakemake


def test_slurm_profile_plans_the_whole_paper_dag(tmp_path):
    """The user's command, dry: 11 datasets x 3 seeds x every method, shards as GPU jobs."""
    out = snakemake("--profile", "slurm", "-n", "results/table1.csv", "--directory", str(tmp_path), timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    counts = job_counts(out.stdout)
    n, seeds, shards = 11, 3, 16
    assert counts["download_dataset"] == n and counts["prepare_dataset"] == n
    assert counts["make_split"] == n * seeds
    assert counts["counterfactual_shard"] == n * seeds * shards
    methods = load_config(REPO / "config.paper.yaml")["methods"]
    assert len(methods) == 11 and counts["train_prompt"] == n * seeds * len(methods)
    assert "shortcut" not in counts  # no paired splits, no controls: the embedded suite's report only
    assert counts["evaluate"] == n * seeds and counts["table1"] == 1
    blocks = out.stdout.split("\nrule ")
    shards_planned = [b for b in blocks if b.startswith("counterfactual_shard:")]
    assert shards_planned and all("gpu=1" in b for b in shards_planned)
    # GPU jobs sized per learner: MaPLe runs the vision tower, CoCoOp and CPL encode B x C prompts
    prompts = {re.search(r"method=(\w+)", b).group(1): b for b in blocks if b.startswith("train_prompt:")}
    memory = {m: int(re.search(r"mem_mb=(\d+)", b).group(1)) for m, b in prompts.items()}
    assert memory["maple"] == memory["dicap_maple"] == 4 * memory["coop"] and memory["cocoop"] == 2 * memory["coop"]
    assert all("gpu=1" in b for b in prompts.values())
    assert "build/paper/" in out.stdout and "build/embedded/" not in out.stdout
    assert "oracle" not in counts and "audit_counterfactuals" not in counts  # no true counterfactuals here


def test_downloads_run_in_the_controller_unless_sent_to_the_cluster(tmp_path):
    """`download_dataset` is a local rule (the controller has the network) by default; with
    `downloads: cluster` it is submitted like any job (docs/cluster.md#running-it-end-to-end)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    local = {}
    for where in ("controller", "cluster"):
        with SnakemakeApi(OutputSettings()) as api:
            workflow = api.workflow(
                resource_settings=ResourceSettings(cores=1),
                config_settings=ConfigSettings(configfiles=[REPO / "config.yaml", REPO / "config.paper.yaml"],
                                               config={"downloads": where}),
                snakefile=REPO / "Snakefile", workdir=tmp_path,
            )
            local[where] = set(workflow._workflow._localrules)
    assert local == {"controller": {"download_dataset"}, "cluster": set()}, local
