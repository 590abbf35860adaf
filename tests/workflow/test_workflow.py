"""The workflow as users drive it: dry runs, lint, config errors, resources.  The tiny real run is
tests/pipeline/test_tiny_pipeline.py."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from dicap.config import load_config
from snakemake_runner import REPO, job_counts, snakemake


def fresh(tmp_path: Path) -> tuple[str, ...]:
    """Plan in an empty working directory, so results already built in the checkout don't matter."""
    return ("--configfile", str(REPO / "config.yaml"), "--directory", str(tmp_path))


def test_dry_run_plans_every_job(tmp_path):
    out = snakemake("-n", *fresh(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    for rule in ("prepare_dataset", "clip_backbone", "diffusion_backbone", "counterfactual_shard",
                 "merge_counterfactuals", "train_prompt", "evaluate", "table1",
                 "train_task_prompt", "evaluate_task", "task_table"):
        assert rule in out.stdout


def test_slurm_profile_plans_retrieval_and_vqa_on_their_own_datasets_with_gpu_shards(tmp_path):
    """Tables 2 and 3 of the paper suite: Flickr30k, MSCOCO and VQAv2, each downloaded,
    split and regenerated in GPU shards (the profile's `shards`), then trained per method and seed."""
    out = snakemake("--profile", "slurm", "-n", "results/table2.csv", "results/table3.csv", "--directory", str(tmp_path),
                    "--configfile", str(REPO / "config.yaml"), str(REPO / "config.paper.yaml"))  # the profile's, made absolute
    assert out.returncode == 0, out.stderr[-2000:]
    paper = load_config(REPO / "config.paper.yaml")
    counts = job_counts(out.stdout + out.stderr)
    n_seeds = len(load_config(REPO / "config.yaml")["seeds"])
    # shards are sized by image count (counterfactual.images_per_shard): each dataset's own "-of-K"
    shards = {d: int(re.search(rf"counterfactuals/{d}/main/seed\d+/shard\d+-of-(\d+)", out.stdout).group(1))
              for d in ("flickr30k", "mscoco", "vqav2")}
    assert counts["download_dataset"] == 3 and counts["counterfactual_shard"] == n_seeds * sum(shards.values()), counts
    assert counts["train_task_prompt"] == 3 * n_seeds * len(load_config(REPO / "config.yaml")["tasks"]["methods"]), counts
    blocks = out.stdout.split("rule ")
    shard_blocks = [b for b in blocks if b.startswith("counterfactual_shard:")]
    for dataset in ("flickr30k", "mscoco", "vqav2"):
        mine = [b for b in shard_blocks if f"counterfactuals/{dataset}/main/" in b]
        assert len(mine) == n_seeds * shards[dataset] and all("gpu=1" in b for b in mine), dataset
    assert not any("/dtd/" in b or "/imagenet/" in b for b in shard_blocks)  # Table 1's datasets are not needed


def test_a_task_table_without_datasets_is_refused_before_any_job(tmp_path):
    (tmp_path / "no_vqa.yaml").write_text("tasks:\n  datasets:\n    vqa: []\n")
    out = snakemake("-n", "results/table3.csv", "--directory", str(tmp_path), "--configfile", str(REPO / "config.yaml"),
                    str(REPO / "config.paper.yaml"), str(tmp_path / "no_vqa.yaml"))
    assert out.returncode != 0
    assert "results/table3 needs vqa datasets: set tasks.datasets.vqa" in out.stdout + out.stderr


def test_slurm_profile_dry_run_asks_gpu_for_gpu_rules_only(tmp_path):
    # Run from the repository root, as users do, so that `--profile slurm` finds ./slurm/.
    out = snakemake("--profile", "slurm", "-n", "results/table1.csv", *fresh(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    blocks = out.stdout.split("rule ")
    shard_blocks = [b for b in blocks if b.startswith("counterfactual_shard:")]
    assert shard_blocks, "no counterfactual_shard job planned"
    assert all("gpu=1" in b for b in shard_blocks)
    prompt_blocks = [b for b in blocks if b.startswith("train_prompt:")]
    learners = [b for b in prompt_blocks if "method=zeroshot" not in b]  # zeroshot learns nothing: no GPU
    assert learners and all("gpu=1" in b for b in learners)
    assert all("gpu=0" in b for b in prompt_blocks if "method=zeroshot" in b)
    split_blocks = [b for b in blocks if b.startswith("make_split:")]
    assert split_blocks and not any("gpu=" in b for b in split_blocks)


def test_classifier_guide_adds_its_training_rule(tmp_path):
    override = tmp_path / "classifier.yaml"
    override.write_text("counterfactual:\n  guide: classifier\n")
    out = snakemake("-n", "-p", "--configfile", str(REPO / "config.yaml"), str(override), "--directory", str(tmp_path))
    assert out.returncode == 0, out.stdout[-2000:]
    assert "guide_classifier" in out.stdout
    assert "--classifier-dir build/embedded/models/shapes/guide_classifier" in out.stdout
    default = snakemake("-n", *fresh(tmp_path))
    assert "guide_classifier" not in default.stdout


@pytest.mark.parametrize("target", ["ablation_guidance_scale", "ablation_sampling", "ablation_true_cf", "ablation_context", "ablation_loss"])
def test_ablations_are_targets_by_name(tmp_path, target):
    out = snakemake("-n", target, *fresh(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"rule {target}:" in out.stdout
    assert f"results/ablations/{target.removeprefix('ablation_')}.csv" in out.stdout


def test_lint_is_clean():
    out = snakemake("--lint")
    assert out.returncode == 0, out.stdout[-3000:]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("prompt:\n  epoch: 3\n", "prompt.epoch"),
        ("counterfactual:\n  guidance_scale: 'five'\n", "counterfactual.guidance_scale"),
        ("seeds: []\n", "seeds"),
        ("data:\n  shots: -1\n", "data.shots"),
    ],
)
def test_bad_config_stops_before_any_job_naming_the_key(tmp_path, override, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(override)
    out = snakemake("-n", "--configfile", str(REPO / "config.yaml"), str(bad), "--directory", str(tmp_path))
    assert out.returncode != 0
    assert key in out.stdout + out.stderr
    assert not (tmp_path / "build").exists()


def test_every_job_declares_memory_and_runtime(tmp_path):
    """Without a profile's defaults, each planned job still carries the rule's own mem_mb and runtime."""
    out = snakemake("-n", "all", "ablation_guidance_scale", "ablation_sampling", "ablation_true_cf", "ablation_context",
                    "ablation_loss", *fresh(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = [block for block in out.stdout.split("\nrule ")[1:] if not block.startswith(("all:", "localrule all"))]
    assert len(jobs) > 50
    for block in jobs:
        resources = next((line for line in block.splitlines() if line.strip().startswith("resources:")), "")
        assert "mem_mb=" in resources and "runtime=" in resources, block[:300]


def test_every_rule_declares_threads():
    import re

    for path in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"(?m)^\s*rule\b", path.read_text())[1:]:
            assert re.search(r"(?m)^\s+threads:", block), f"{path.name}: a rule without threads: {block[:80]}"


def test_few_shot_file_is_keyed_by_its_parameters(tmp_path):
    """Another shot count is another split file, never a stale one reused (CoOp's cache pitfall)."""
    def split_files(*extra: str) -> set[str]:
        out = snakemake("-n", "--configfile", str(REPO / "config.yaml"), *extra, "--directory", str(tmp_path))
        assert out.returncode == 0, out.stderr[-2000:]
        return set(re.findall(r"build/embedded/splits/\w+/seed\d+-[0-9a-f]{10}\.parquet", out.stdout))

    fewer = tmp_path / "fewer.yaml"
    fewer.write_text("data:\n  shots: 8\n")
    default, other = split_files(), split_files(str(fewer))
    # 2 datasets x 3 seeds, plus the negative control's unbiased draw on digits (controls: [digits])
    assert len(default) == 9 and len(other) == 9
    assert not default & other


def test_per_dataset_clip_steps_and_controls_reach_the_plan(tmp_path):
    """clip.dataset_steps reaches shapes' backbone only, clip.pretrain_with digits' only; controls run
    only on configured datasets."""
    out = snakemake("-n", "-p", "--configfile", str(REPO / "config.yaml"), "--directory", str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    commands = [line for line in out.stdout.splitlines() if "dicap clip_backbone" in line]
    steps = {re.search(r"data/(\w+) ", c).group(1): re.search(r'"steps": ?(\d+)', c).group(1) for c in commands}
    assert steps == {"shapes": "600", "digits": "1500"}
    company = {re.search(r"data/(\w+) ", c).group(1): re.findall(r"--pretrain-with ([\w/]+)", c) for c in commands}
    assert company == {"shapes": [], "digits": ["build/embedded/data/shapes"]}
    counts = job_counts(out.stdout)
    assert counts["make_split"] == 9 and counts["shortcut"] == 1  # digits' unbiased draw: its negative control
    only_shapes = snakemake("-n", "--configfile", str(REPO / "config.yaml"), "--config", "datasets=[shapes]",
                            "--directory", str(tmp_path))
    assert only_shapes.returncode == 0, only_shapes.stderr[-2000:]
    counts = job_counts(only_shapes.stdout)
    n_methods = len(load_config(REPO / "config.yaml")["methods"])
    assert counts["make_split"] == 3 and counts["train_prompt"] == 3 * n_methods and counts["shortcut"] == 1, counts
    assert "cross_dataset" not in counts  # digits' CLIP is the one that has seen both worlds


def test_no_workflow_output_is_tracked_by_git(tmp_path):
    """A committed output shadows its target: a fresh clone would rerun nothing (issue: 'Nothing to be done')."""
    tracked = set(subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split())
    plans = [snakemake("-n", "all", *(f"ablation_{a}" for a in ("guidance_scale", "sampling", "true_cf", "context", "loss")), *fresh(tmp_path)),
             snakemake("--profile", "slurm", "-n", "results/table1.csv", "--directory", str(tmp_path), timeout=300)]
    outputs = set()
    for out in plans:
        assert out.returncode == 0, out.stderr[-2000:]
        outputs |= {p for line in out.stdout.splitlines() if line.strip().startswith("output:")
                    for p in line.split(":", 1)[1].replace(",", " ").split()}
    assert len(outputs) > 100
    assert not outputs & tracked, sorted(outputs & tracked)[:5]
    assert {p for p in tracked if p.startswith("results/")} <= {"results/README.md", "results/reference/embedded.csv",
                                                                  "results/reference/embedded.machine.json",
                                                                  "results/reference/embedded.md"}
