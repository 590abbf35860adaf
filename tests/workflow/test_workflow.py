"""The workflow as users drive it: dry runs, lint, config errors, and a tiny real run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from dicap.config import load_config
from snakemake_runner import ENV, REPO, SNAKEMAKE, job_counts, snakemake, tiny_args


def pids_in(workdir: Path, pattern: str) -> list[str]:
    """Processes matching ``pattern`` that run in ``workdir``: never another checkout's jobs."""
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return [pid for pid in found if os.path.realpath(f"/proc/{pid}/cwd") == os.path.realpath(workdir)]


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
    n_seeds, shards = len(load_config(REPO / "config.yaml")["seeds"]), paper["counterfactual"]["shards"]
    assert counts["download_dataset"] == 3 and counts["counterfactual_shard"] == 3 * n_seeds * shards, counts
    assert counts["train_task_prompt"] == 3 * n_seeds * len(load_config(REPO / "config.yaml")["tasks"]["methods"]), counts
    blocks = out.stdout.split("rule ")
    shard_blocks = [b for b in blocks if b.startswith("counterfactual_shard:")]
    for dataset in ("flickr30k", "mscoco", "vqav2"):
        mine = [b for b in shard_blocks if f"counterfactuals/{dataset}/main/" in b]
        assert len(mine) == n_seeds * shards and all("gpu=1" in b for b in mine), dataset
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


@pytest.mark.pipeline
def test_tiny_pipeline_end_to_end(tiny_run):
    """The embedded suite at test size: the real rules and code, a table with the right schema."""
    tmp_path = tiny_run
    args = [*tiny_args(tmp_path), "--cores", "2"]
    table = pd.read_csv(tmp_path / "results" / "table1.csv")
    assert list(table.columns) == [
        "suite", "split", "dataset", "method", "base", "base_std", "novel", "novel_std", "hm", "hm_std", "seeds",
    ]
    assert set(table["method"]) == set(load_config(REPO / "tests" / "config.test.yaml")["methods"])
    assert set(table["split"]) == {"test_unbiased", "test_aligned", "test_conflict"}
    assert set(table["dataset"]) == {"shapes", "average"}
    assert (table["suite"] == "embedded").all()
    assert (table["seeds"] == "1 2").all()
    zs = table[(table["method"] == "zeroshot") & (table["dataset"] == "shapes") & (table["split"] == "test_unbiased")].iloc[0]
    chance = 100 / 5  # five base and five novel classes
    assert zs["base"] > chance and zs["novel"] > chance, zs
    for name in ("table1.md", "table1.provenance.json", "table1.metrics.json", "backbones.csv",
                 "figures/table1_bars.png", "figures/counterfactuals_shapes.png", "shortcut.md", "figures/shortcut.png",
                 "reproduction.csv", "reproduction.md"):
        path = tmp_path / "results" / name
        assert path.stat().st_size > 0, name
        assert path.stat().st_mode & 0o044 == 0o044, f"{name} is not readable by the group and others (umask 022)"
    reproduction = pd.read_csv(tmp_path / "results" / "reproduction.csv")
    assert set(reproduction["table"]) == {"table1", "table2", "table3", "backbones", "counterfactual_audit", "shortcut"}
    # the shortcut table: every method on the biased shots, and both controls (config.test.yaml: controls [shapes])
    shortcut = pd.read_csv(tmp_path / "results" / "shortcut.csv")
    rows = set(zip(shortcut["method"], shortcut["shots"], shortcut["counterfactuals"]))
    methods = load_config(REPO / "tests" / "config.test.yaml")["methods"]
    with_cf = [m for m in methods if m.startswith("dicap")]
    assert rows == {("zeroshot", "none", "none"), ("coop", "unbiased", "none"),
                    *((m, "biased", "generated" if m in with_cf else "none") for m in methods if m != "zeroshot"),
                    *((m, "biased", "true") for m in with_cf)}
    assert ((shortcut["gap"] - (shortcut["aligned"] - shortcut["conflict"])).abs() < 1e-3).all()
    assert (shortcut["worst_group"] <= shortcut[["aligned", "conflict"]].min(axis=1) + 1e-9).all()
    assert (shortcut["seeds"] == "1 2").all()
    assert "±" in (tmp_path / "results" / "table1.md").read_text()
    # Tables 2 and 3: every task method on every dataset, over the config's seeds
    task_methods = load_config(REPO / "tests" / "config.test.yaml")["tasks"]["methods"]
    for name, headline in (("table2", "i2t_r1"), ("table3", "vqa_accuracy")):
        task_table = pd.read_csv(tmp_path / "results" / f"{name}.csv")
        assert list(task_table["method"]) == task_methods and set(task_table["dataset"]) == {"shapes"}, task_table
        assert (task_table["seeds"] == "1 2").all() and task_table[headline].between(0, 100).all()
        assert "±" in (tmp_path / "results" / f"{name}.md").read_text()

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
    pids = pids_in(tmp_path, "dicap counterfactual_shard .*seed1/shard0-of-2")
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
    out = snakemake(*args, "ablation_guidance_scale", "ablation_sampling", "ablation_true_cf", timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    expected = {"guidance_scale": ("s", {0.0, 3.0, 10.0}), "sampling": ("sampling", {"random", "similarity", "centroid"}),
                "true_cf": ("counterfactuals", {"generated", "true"})}
    for ablation, (column, values) in expected.items():
        table = pd.read_csv(tmp_path / "results" / "ablations" / f"{ablation}.csv")
        dicap = table[table["method"] == "dicap"]
        assert set(dicap[column]) == values, (ablation, dicap[column].tolist())
        assert dicap[["base", "novel", "hm", "valid", "faithful"]].notna().all().all(), ablation
        assert (tmp_path / "results" / "ablations" / f"{ablation}.png").stat().st_size > 0

    # The prompt ablations (config.test.yaml: n_ctxs [1, 4], cf_weights [0.25], cf_temperatures [0.5]).
    out = snakemake(*args, "ablation_context", "ablation_loss", timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    context = pd.read_csv(tmp_path / "results" / "ablations" / "context.csv")
    assert set(zip(context["method"], context["n_ctx"])) == {(m, n) for m in ("coop", "dicap") for n in (1, 4)}
    loss = pd.read_csv(tmp_path / "results" / "ablations" / "loss.csv")
    assert set(zip(loss["method"], loss["cf_weight"], loss["cf_temperature"])) == {
        (m, w, t) for m in ("dicap", "dicap_pos") for w, t in ((1.0, 0.07), (0.25, 0.07), (1.0, 0.5))}
    for table in (context, loss):
        assert table[["base", "novel", "hm", "hm_std"]].notna().all().all() and (table["seeds"] == 2).all()
    for name in ("context", "loss"):
        assert (tmp_path / "results" / "ablations" / f"{name}.png").stat().st_size > 0
    # the context lengths trained what they say: the saved context has n_ctx rows
    from dicap.io import load_arrays

    ctx = load_arrays(tmp_path / "build/embedded/prompts/shapes/ctx1/dicap/seed1.safetensors")["ctx"]
    assert ctx.shape[0] == 1


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
    """clip.dataset_steps reaches shapes' backbone only; controls run only on configured datasets."""
    out = snakemake("-n", "-p", "--configfile", str(REPO / "config.yaml"), "--directory", str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    commands = [line for line in out.stdout.splitlines() if "dicap clip_backbone" in line]
    steps = {re.search(r"data/(\w+) ", c).group(1): re.search(r'"steps": ?(\d+)', c).group(1) for c in commands}
    assert steps == {"shapes": "150", "digits": "600"}
    counts = job_counts(out.stdout)
    assert counts["make_split"] == 9 and counts["shortcut"] == 1  # digits' unbiased draw: its negative control
    only_shapes = snakemake("-n", "--configfile", str(REPO / "config.yaml"), "--config", "datasets=[shapes]",
                            "--directory", str(tmp_path))
    assert only_shapes.returncode == 0, only_shapes.stderr[-2000:]
    counts = job_counts(only_shapes.stdout)
    n_methods = len(load_config(REPO / "config.yaml")["methods"])
    assert counts["make_split"] == 3 and counts["train_prompt"] == 3 * n_methods and counts["shortcut"] == 1, counts


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
                                                                  "results/reference/embedded.machine.json"}


@pytest.mark.pipeline
def test_an_embedded_run_does_not_shadow_the_paper_plan(tiny_run):
    """The user's cluster command plans the whole paper DAG in a checkout that ran the embedded suite."""
    out = snakemake("--profile", "slurm", "-n", "results/table1.csv", "--directory", str(tiny_run), timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    counts = job_counts(out.stdout)
    assert sum(counts.values()) >= 800 and counts["prepare_dataset"] == 11, counts


@pytest.mark.pipeline
def test_editing_a_loss_reruns_prompt_training_and_what_follows(tiny_run, tmp_path):
    """Snakemake sees the code a job imports (rules pass code_version through params:)."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "src" / "dicap", src / "dicap", ignore=shutil.ignore_patterns("__pycache__"))
    losses = src / "dicap" / "prompting" / "losses.py"
    losses.write_text(losses.read_text() + "\n# an edit that changes no behaviour\n")
    out = snakemake(*tiny_args(tiny_run), "-n", env={**ENV, "PYTHONPATH": str(src)})
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    counts = job_counts(out.stdout)
    # 2 seeds x (7 methods + the two controls' 1 + 3 methods); evaluation per seed of main and both controls
    assert counts.get("train_prompt") == 22 and counts.get("evaluate") == 6 and counts.get("table1") == 1, counts
    assert counts.get("shortcut") == 1, counts
    upstream = {"prepare_dataset", "make_split", "clip_backbone", "diffusion_backbone", "oracle", "counterfactual_shard",
                "merge_counterfactuals", "encode_train_features", "encode_eval_features", "audit_counterfactuals"}
    assert not upstream & set(counts), counts


@pytest.mark.pipeline
def test_a_killed_snakemake_continues_with_the_same_command(tiny_run):
    """kill -9 of Snakemake itself: rerunning `bash scripts/run.sh ...` unlocks and finishes, same bytes."""
    table = tiny_run / "results" / "table1.csv"
    before = table.read_bytes()
    command = ["bash", str(REPO / "scripts" / "run.sh"), *tiny_args(tiny_run), "results/table1.csv",
               "--forcerun", "train_prompt"]
    env = {**ENV, "CORES": "1"}
    job = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    incomplete = tiny_run / ".snakemake" / "incomplete"
    deadline = time.monotonic() + 300
    while not (incomplete.exists() and any(incomplete.iterdir())):
        assert job.poll() is None and time.monotonic() < deadline, "no job started"
        time.sleep(0.2)
    os.kill(job.pid, signal.SIGKILL)  # run.sh execs snakemake: this is Snakemake itself
    job.wait(timeout=30)
    assert any((tiny_run / ".snakemake" / "locks").iterdir()), "expected the killed run's lock to remain"
    deadline = time.monotonic() + 120  # its orphaned job may still be finishing
    while pids_in(tiny_run, "dicap train_prompt"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "unlocking" in again.stderr
    assert table.read_bytes() == before


@pytest.mark.pipeline
def test_report_gathers_tables_and_figures(tiny_run):
    out = snakemake(*tiny_args(tiny_run), "--report", "results/report.html", timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    html = (tiny_run / "results" / "report.html").read_text(errors="replace")
    for name in ("table1.csv", "counterfactual_audit.csv", "table1_bars.png", "reproduction.csv"):
        assert name in html, name
