"""The workflow as users drive it: dry runs, lint, config errors, and a tiny real run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from snakemake_runner import ENV, REPO, SNAKEMAKE, job_counts, snakemake, tiny_args


def fresh(tmp_path: Path) -> tuple[str, ...]:
    """Plan in an empty working directory, so results already built in the checkout don't matter."""
    return ("--configfile", str(REPO / "config.yaml"), "--directory", str(tmp_path))


def test_dry_run_plans_every_job(tmp_path):
    out = snakemake("-n", *fresh(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    for rule in ("prepare_dataset", "clip_backbone", "diffusion_backbone", "counterfactual_shard",
                 "merge_counterfactuals", "train_prompt", "evaluate", "table1"):
        assert rule in out.stdout


def test_slurm_profile_dry_run_asks_gpu_for_gpu_rules_only(tmp_path):
    # Run from the repository root, as users do, so that `--profile slurm` finds ./slurm/.
    out = snakemake("--profile", "slurm", "-n", "results/table1.csv", *fresh(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    blocks = out.stdout.split("rule ")
    shard_blocks = [b for b in blocks if b.startswith("counterfactual_shard:")]
    assert shard_blocks, "no counterfactual_shard job planned"
    assert all("gpu=1" in b for b in shard_blocks)
    prompt_blocks = [b for b in blocks if b.startswith("train_prompt:")]
    assert prompt_blocks and all("gpu=1" in b for b in prompt_blocks)
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


@pytest.mark.parametrize("target", ["ablation_scale", "ablation_sampling", "ablation_oracle"])
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
        ("counterfactual:\n  scale: 'five'\n", "counterfactual.scale"),
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


@pytest.mark.pipeline
def test_tiny_pipeline_end_to_end(tiny_run):
    """The embedded suite at test size: the real rules and code, a table with the right schema."""
    tmp_path = tiny_run
    args = [*tiny_args(tmp_path), "--cores", "2"]
    table = pd.read_csv(tmp_path / "results" / "table1.csv")
    assert list(table.columns) == [
        "suite", "split", "dataset", "method", "base", "base_std", "novel", "novel_std", "hm", "hm_std", "seeds",
    ]
    assert set(table["method"]) == {"zeroshot", "coop", "dicap"}
    assert set(table["split"]) == {"test_unbiased", "test_anti"}
    assert set(table["dataset"]) == {"shapes", "average"}
    assert (table["suite"] == "embedded").all()
    assert (table["seeds"] == "1 2").all()
    zs = table[(table["method"] == "zeroshot") & (table["dataset"] == "shapes") & (table["split"] == "test_unbiased")].iloc[0]
    chance = 100 / 5  # five base and five novel classes
    assert zs["base"] > chance and zs["novel"] > chance, zs
    for name in ("table1.md", "table1.provenance.json", "backbones.csv", "figures/table1_bars.png",
                 "figures/counterfactuals_shapes.png"):
        assert (tmp_path / "results" / name).stat().st_size > 0, name
    assert "±" in (tmp_path / "results" / "table1.md").read_text()

    audit = pd.read_csv(tmp_path / "results" / "counterfactual_audit.csv")
    assert len(audit) == 1 and audit["dataset"].iloc[0] == "shapes" and audit["seeds"].iloc[0] == "1 2"
    for column in ("valid", "kept_background", "kept_object_colour", "kept_position", "kept_scale", "faithful",
                   "mse_to_true", "ssim_to_true", "unguided_mse_to_true", "factual_mse_to_true", "reconstruction_mse",
                   "true_valid", "oracle_heldout_class_accuracy"):
        assert column in audit.columns and 0 <= audit[column].iloc[0] <= 1, column

    # A second run has nothing to do.
    again = snakemake(*args, "-n", timeout=120)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr

    # Retraining every prompt from the same seeds gives a byte-identical table (CPU determinism).
    first = (tmp_path / "results" / "table1.csv").read_bytes()
    redo = snakemake(*args, "results/table1.csv", "--forcerun", "train_prompt", timeout=600)
    assert redo.returncode == 0, (redo.stdout + redo.stderr)[-4000:]
    assert "train_prompt" in redo.stdout + redo.stderr
    assert (tmp_path / "results" / "table1.csv").read_bytes() == first

    # A shard job killed with SIGKILL mid-run leaves no output; the rerun recomputes only that shard,
    # and gives the same counterfactuals as before, byte for byte.
    merged = "build/embedded/counterfactuals/shapes/main/seed1/counterfactuals.safetensors"
    before = (tmp_path / merged).read_bytes()
    shard = tmp_path / "build/embedded/counterfactuals/shapes/main/seed1/shard0-of-2.safetensors"
    for path in (shard, tmp_path / merged):
        path.unlink()
        path.with_suffix(".parquet").unlink()
    log = tmp_path / "logs/counterfactual_shard/shapes/main/seed1/shard0-of-2.log"
    log.unlink()
    job = subprocess.Popen([SNAKEMAKE, *args, merged], cwd=REPO, env=ENV, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (log.exists() and "counterfactuals" in log.read_text()):
        assert job.poll() is None and time.monotonic() < deadline, "the shard job never started"
        time.sleep(0.2)
    # Kill the job itself, as a cluster does, not Snakemake: it must notice and stop.
    pids = subprocess.run(["pgrep", "-f", "dicap counterfactual-shard .*seed1/shard0-of-2"], capture_output=True, text=True).stdout.split()
    assert pids, "no running shard process found"
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)
    assert job.wait(timeout=120) != 0
    assert not shard.exists() and not shard.with_suffix(".parquet").exists()
    plan = snakemake(*args, merged, "-n", timeout=120)
    assert plan.returncode == 0, (plan.stdout + plan.stderr)[-2000:]
    assert job_counts(plan.stdout).get("counterfactual_shard") == 1, plan.stdout[-2000:]
    assert "output: build/embedded/counterfactuals/shapes/main/seed1/shard0-of-2.safetensors" in plan.stdout
    resumed = snakemake(*args, merged, timeout=600)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert (tmp_path / merged).read_bytes() == before

    # Each ablation runs by its name and reuses the main run where its settings are config's own.
    out = snakemake(*args, "ablation_scale", "ablation_sampling", "ablation_oracle", timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    expected = {"scale": ("s", {0.0, 3.0, 10.0}), "sampling": ("sampling", {"random", "similarity", "centroid"}),
                "oracle": ("counterfactuals", {"generated", "true"})}
    for kind, (column, values) in expected.items():
        table = pd.read_csv(tmp_path / "results" / "ablations" / f"{kind}.csv")
        dicap = table[table["method"] == "dicap"]
        assert set(dicap[column]) == values, (kind, dicap[column].tolist())
        assert dicap[["base", "novel", "hm", "valid", "faithful"]].notna().all().all(), kind
        assert (tmp_path / "results" / "ablations" / f"{kind}.png").stat().st_size > 0


def test_every_job_declares_memory_and_runtime(tmp_path):
    """Without a profile's defaults, each planned job still carries the rule's own mem_mb and runtime."""
    out = snakemake("-n", "all", "ablation_scale", "ablation_sampling", "ablation_oracle", *fresh(tmp_path))
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
    assert len(default) == 6 and len(other) == 6  # 2 datasets x 3 seeds
    assert not default & other
