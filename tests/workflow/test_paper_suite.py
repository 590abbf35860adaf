"""The paper suite without internet or GPU: its whole DAG planned through the cluster profile."""

from __future__ import annotations

import re

from dicap import layout
from dicap.config import load_config
from dicap.plan import Plan
from snakemake_runner import REPO, job_counts, snakemake

PAPER = load_config(REPO / "config.paper.yaml")


def test_slurm_profile_plans_the_whole_paper_dag(tmp_path):
    """The user's command, dry: 11 datasets x 3 seeds x every method, shards as GPU jobs."""
    out = snakemake("--profile", "slurm", "-n", "results/table1.csv", "--directory", str(tmp_path), timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    counts = job_counts(out.stdout)
    n, seeds = 11, 3
    assert counts["download_dataset"] == n and counts["prepare_dataset"] == n
    assert counts["make_split"] == n * seeds
    # shards sized by image count (counterfactual.images_per_shard): ImageNet 2, every other dataset 1
    assert counts["counterfactual_shard"] == seeds * sum(Plan(PAPER).shards(d) for d in PAPER["datasets"]) == seeds * (n + 1)
    methods = PAPER["methods"]
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
    # a method that learns nothing asks for no GPU and a short walltime; the others for what their budget says
    assert "gpu=0" in prompts["zeroshot"] and all("gpu=1" in b for m, b in prompts.items() if m != "zeroshot")
    runtime = {m: int(re.search(r"runtime=(\d+)", b).group(1)) for m, b in prompts.items()}
    assert runtime["zeroshot"] < runtime["coop"] <= runtime["maple"]
    assert "build/paper/" in out.stdout and "build/embedded/" not in out.stdout
    assert "oracle" not in counts and "audit_counterfactuals" not in counts  # no true counterfactuals here


def test_slurm_profile_plans_the_transfer_tables_with_gpu_jobs(tmp_path):
    """`snakemake --profile slurm -n results/cross_dataset.csv results/domain_generalization.csv`:
    one all-class ImageNet run per method and seed serves both tables; the source, the four
    domain-generalization targets and the ten other datasets are encoded once each and scored
    per seed, on GPUs."""
    out = snakemake("--profile", "slurm", "-n", "results/cross_dataset.csv", "results/domain_generalization.csv",
                    "--directory", str(tmp_path), timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    counts, seeds = job_counts(out.stdout), len(PAPER["seeds"])
    targets = 1 + len(PAPER["transfer"]["domain_generalization"]) + len(PAPER["transfer"]["cross_dataset"])
    assert targets == 15 and counts["encode_target_features"] == targets and counts["evaluate_transfer"] == targets * seeds
    assert counts["train_prompt"] == len(PAPER["methods"]) * seeds and counts["clip_backbone"] == 1  # ImageNet's CLIP encodes every target
    assert counts["counterfactual_shard"] == seeds * Plan(PAPER).shards("imagenet", layout.ALL_CLASSES) == seeds * 4  # 16,000 images
    assert "evaluate" not in counts
    assert counts["download_dataset"] == targets and counts["cross_dataset"] == counts["domain_generalization"] == 1
    blocks = out.stdout.split("\nrule ")
    for rule in ("encode_target_features", "evaluate_transfer", "counterfactual_shard"):
        planned = [b for b in blocks if b.startswith(f"{rule}:")]
        assert planned and all("gpu=1" in b for b in planned), rule
    assert all("variant=all_classes" in b for b in blocks if b.startswith(("train_prompt:", "evaluate_transfer:")))


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


def test_one_baseline_on_one_dataset_plans_no_diffusion(tmp_path):
    """The smoke command of docs/cluster.md: CoOp alone trains on no counterfactual, so neither a
    diffusion model nor a counterfactual shard is planned, though the text tasks' methods use them."""
    out = snakemake("--profile", "slurm", "-n", "results/table1.csv", "--directory", str(tmp_path),
                    "--config", "datasets=[oxford_pets]", "methods=[coop]", "seeds=[1]", timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    counts = job_counts(out.stdout)
    assert "diffusion_backbone" not in counts and "counterfactual_shard" not in counts, counts
    assert counts["train_prompt"] == counts["evaluate"] == counts["table1"] == 1
