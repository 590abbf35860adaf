"""The embedded suite at test size, end to end: the real rules and code (tests/config.test.yaml).

``tiny_run`` runs ``all`` once for the session.  The tests that read it come first; a test that
runs jobs (a retrain, a killed shard job, a killed Snakemake, the ablations, the report) works on
its own copy of the run (``run_copy``, tests/pipeline/conftest.py), so no scenario's failure hides
or changes another's.  Build paths are ``dicap.layout``'s; results/ is the rules' own
(rules/common.smk).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd

from dicap import layout
from dicap.io import load_arrays
from dicap.prompting.methods import READINGS
from snakemake_runner import ENV, REPO, SNAKEMAKE, job_counts, snakemake, tiny_args

BUILD = layout.Build("embedded")
RESULTS = Path("results")
DATASET = "shapes"  # config.test.yaml's one dataset, and its shortcut control


def pids_in(workdir: Path, pattern: str) -> list[str]:
    """Processes matching ``pattern`` that run in ``workdir``: never another checkout's jobs."""
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return [pid for pid in found if os.path.realpath(f"/proc/{pid}/cwd") == os.path.realpath(workdir)]


def run_args(workdir: Path) -> list[str]:
    """The tiny suite's command line in ``workdir``, as ``tiny_run`` ran it."""
    return [*tiny_args(workdir), "--cores", "2"]


def seeds(config: dict) -> str:
    """How a table writes the seeds it averaged over: ``1 2``."""
    return " ".join(map(str, config["seeds"]))


# --- the run as ``all`` left it: read only ---------------------------------------------------------


def test_table1_has_the_schema_every_method_and_beats_chance(tiny_run, tiny_config):
    table = pd.read_csv(tiny_run / RESULTS / "table1.csv")
    assert list(table.columns) == [
        "suite", "split", "dataset", "method", "base", "base_std", "base_se", "novel", "novel_std", "novel_se",
        "hm", "hm_std", "hm_se", "n", "seeds",
    ]
    assert set(table["method"]) == set(tiny_config["methods"])
    assert set(table["split"]) == {"test_unbiased", "test_aligned", "test_conflict"}
    assert set(table["dataset"]) == {DATASET, "average"}
    assert (table["suite"] == "embedded").all()
    assert (table["seeds"] == seeds(tiny_config)).all()
    zs = table[(table["method"] == "zeroshot") & (table["dataset"] == DATASET) & (table["split"] == "test_unbiased")].iloc[0]
    chance = 100 / 5  # five base and five novel classes
    assert zs["base"] > chance and zs["novel"] > chance, zs
    assert "±" in (tiny_run / RESULTS / "table1.md").read_text()


def test_every_result_file_is_written_and_readable_by_all(tiny_run):
    for name in ("table1.md", "table1.provenance.json", "table1_metrics/average.json", "backbones.csv",
                 "figures/table1_bars.png", f"figures/counterfactuals_{DATASET}.png", "figures/generator_curve.png", "shortcut.md",
                 "figures/shortcut.png", "reproduction.csv", "reproduction.md"):
        path = tiny_run / RESULTS / name
        assert path.stat().st_size > 0, name
        assert path.stat().st_mode & 0o044 == 0o044, f"{name} is not readable by the group and others (umask 022)"


def test_reproduction_compares_every_table(tiny_run):
    reproduction = pd.read_csv(tiny_run / RESULTS / "reproduction.csv")
    assert set(reproduction["table"]) == {"table1", "table2", "table3", "backbones", "counterfactual_audit", "shortcut",
                                          "domain_generalization", "domain_generalization_paired", "cross_dataset",
                                          "cross_dataset_paired"}


def test_the_cross_dataset_table_scores_shapes_prompts_on_the_other_world_its_clip_read(tiny_run, tiny_config):
    """config.test.yaml: clip.pretrain_with {shapes: [digits]}: every method and the positive control, on
    shapes' own unbiased split (the source column, left out of the average) and on digits, among its classes."""
    cross = pd.read_csv(tiny_run / RESULTS / "cross_dataset.csv")
    assert set(cross["domain"]) == {DATASET, "digits", "average"} and set(cross["dataset"]) == {DATASET}
    with_cf = [m for m in tiny_config["methods"] if m.startswith("dicap")]
    runs = set(zip(cross["variant"], cross["method"]))
    assert runs == {*(("main", m) for m in tiny_config["methods"]), *((layout.TRUE_CF, m) for m in with_cf)}
    assert cross["accuracy"].between(0, 100).all() and (cross["seeds"].astype(str) == "1 2").all()
    by_domain = cross.pivot_table(index=["variant", "method"], columns="domain", values="accuracy")
    assert (by_domain["average"] == by_domain["digits"]).all()
    digits = pd.read_parquet(tiny_run / "build/embedded/data/digits/factors.parquet")
    scored = pd.read_csv(tiny_run / "build/embedded" / layout.fill(layout.TRANSFER_METRICS, dataset=DATASET, variant="main",
                                                                   target="digits", seed=1))
    assert set(scored["split"]) == {"test_unbiased"}  # the unbiased split only: the grid is the shortcut study's
    assert len(digits[digits["split"] == "test_unbiased"]) == 10 * tiny_config["data"]["test_per_class"]


def test_shortcut_table_has_every_method_on_the_biased_shots_and_both_controls(tiny_run, tiny_config):
    """config.test.yaml: controls [shapes]."""
    shortcut = pd.read_csv(tiny_run / RESULTS / "shortcut.csv")
    rows = set(zip(shortcut["method"], shortcut["shots"], shortcut["counterfactuals"]))
    methods = tiny_config["methods"]
    with_cf = [m for m in methods if m.startswith("dicap")]
    assert rows == {("zeroshot", "none", "none"), ("coop", "unbiased", "none"),
                    *((m, "biased", "generated" if m in with_cf else "none") for m in methods if m != "zeroshot"),
                    *((m, "biased", "true") for m in with_cf)}
    assert ((shortcut["gap"] - (shortcut["aligned"] - shortcut["conflict"])).abs() < 1e-3).all()
    assert (shortcut["worst_group"] <= shortcut[["aligned", "conflict"]].min(axis=1) + 1e-9).all()
    assert (shortcut["seeds"] == seeds(tiny_config)).all()


def test_task_tables_have_every_task_method_over_the_seeds(tiny_run, tiny_config):
    """Tables 2 and 3: every task method on every dataset."""
    for task, headline in (("retrieval", "i2t_r1"), ("vqa", "vqa_accuracy")):
        stem = tiny_run / layout.TASK_TABLES[task]
        task_table = pd.read_csv(stem.with_suffix(".csv"))
        assert list(task_table["method"]) == tiny_config["tasks"]["methods"], task_table
        assert set(task_table["dataset"]) == {DATASET}, task_table
        assert (task_table["seeds"] == seeds(tiny_config)).all() and task_table[headline].between(0, 100).all()
        assert "±" in stem.with_suffix(".md").read_text()


def test_counterfactual_audit_reports_every_measure_as_a_share(tiny_run, tiny_config):
    audit = pd.read_csv(tiny_run / RESULTS / "counterfactual_audit.csv")
    assert len(audit) == 1 and audit["dataset"].iloc[0] == DATASET and audit["seeds"].iloc[0] == seeds(tiny_config)
    for column in ("valid", "no_object", "kept_background", "kept_object_colour", "kept_position", "kept_scale", "valid_bg_kept",
                   "faithful", "mse_to_true", "ssim_to_true", "unguided_mse_to_true", "factual_mse_to_true", "reconstruction_mse",
                   "true_valid", "cld", "true_cld", "unguided_cld", "oracle_heldout_class_accuracy", "oracle_heldout_no_object_recall"):
        assert column in audit.columns and 0 <= audit[column].iloc[0] <= 1, column
    for column in ("clip_cosine_to_true", "unguided_clip_cosine_to_true", "factual_clip_cosine_to_true"):
        assert column in audit.columns and -1 <= audit[column].iloc[0] <= 1, column
    assert not [c for c in audit.columns if c.startswith("guide_")]  # the guide's own posterior is no quality score


# --- plans over the finished run (-n): read only ----------------------------------------------------


def test_a_second_run_has_nothing_to_do(tiny_run):
    again = snakemake(*run_args(tiny_run), "-n", timeout=120)
    assert again.returncode == 0, (again.stdout + again.stderr)[-2000:]
    assert "Nothing to be done" in again.stdout + again.stderr


def test_the_paper_suite_never_takes_the_embedded_tables_for_its_own(tiny_run, tmp_path):
    """Both suites write results/table1.csv: over the embedded run's tables, the user's cluster
    command stops in one line instead of overwriting them (or, over pulled ones, planning
    nothing); in a folder of its own it plans the whole paper DAG (docs/running.md#runs)."""
    out = snakemake("--profile", "slurm", "-n", "results/table1.csv", "--directory", str(tiny_run), timeout=300)
    line = ("results/ holds the embedded suite's tables (results/table1.provenance.json), and this is the paper suite: "
            "give it a folder of its own with another --directory, or move results/ away")
    assert out.returncode != 0 and line in (out.stdout + out.stderr).splitlines(), (out.stdout + out.stderr)[-3000:]
    out = snakemake("--profile", "slurm", "-n", "results/table1.csv", "--directory", str(tmp_path), timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    counts = job_counts(out.stdout)
    # every paper job: 11 datasets, 11 methods x 3 seeds each, their shards
    assert counts["prepare_dataset"] == 11 and counts["train_prompt"] == 11 * 11 * 3 and counts["counterfactual_shard"] >= 33, counts


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


# --- jobs run again: each on its own copy of the run ------------------------------------------------


def test_retraining_every_prompt_gives_the_same_table(run_copy):
    """Retraining every prompt from the same seeds gives a byte-identical table (CPU determinism)."""
    table = run_copy / RESULTS / "table1.csv"
    first = table.read_bytes()
    redo = snakemake(*run_args(run_copy), str(RESULTS / "table1.csv"), "--forcerun", "train_prompt", timeout=600)
    assert redo.returncode == 0, (redo.stdout + redo.stderr)[-4000:]
    assert "train_prompt" in redo.stdout + redo.stderr
    assert table.read_bytes() == first


def test_a_killed_shard_job_reruns_alone_to_the_same_counterfactuals(run_copy, tiny_config):
    """A shard job killed with SIGKILL mid-run leaves no output; the rerun recomputes only that
    shard, and gives the same counterfactuals as before, byte for byte."""
    args = run_args(run_copy)
    where = dict(dataset=DATASET, variant=layout.MAIN, seed=tiny_config["seeds"][0])
    shard_of = dict(shard=0, shards=tiny_config["counterfactual"]["shards"])
    merged = BUILD(layout.CF_IMAGES, **where)
    before = (run_copy / merged).read_bytes()
    shard = run_copy / BUILD(layout.CF_SHARD_IMAGES, **where, **shard_of)
    outputs = (shard, run_copy / BUILD(layout.CF_SHARD_TABLE, **where, **shard_of),
               run_copy / merged, run_copy / BUILD(layout.CF_TABLE, **where))
    for path in outputs:
        path.unlink()
    log_template = layout.log_path("counterfactual_shard", "dataset", "variant", "seed", "shard")
    log = run_copy / layout.fill(log_template, **where, **shard_of)
    log.unlink()
    job = subprocess.Popen([SNAKEMAKE, *args, merged], cwd=REPO, env=ENV, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (log.exists() and "counterfactuals" in log.read_text()):
            assert job.poll() is None and time.monotonic() < deadline, "the shard job never started"
            time.sleep(0.2)
        # Kill the job itself, as a cluster does, not Snakemake: it must notice and stop.
        shard_name = Path(layout.fill(layout.CF_SHARD_IMAGES, **where, **shard_of)).with_suffix("")
        pids = pids_in(run_copy, f"dicap counterfactual_shard .*{shard_name.parent.name}/{shard_name.name}")
        assert pids, "no running shard process found"
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL)
        assert job.wait(timeout=120) != 0
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert not shard.exists() and not outputs[1].exists()
    plan = snakemake(*args, merged, "-n", timeout=120)
    assert plan.returncode == 0, (plan.stdout + plan.stderr)[-2000:]
    assert job_counts(plan.stdout).get("counterfactual_shard") == 1, plan.stdout[-2000:]
    assert f"output: {BUILD(layout.CF_SHARD_IMAGES, **where, **shard_of)}" in plan.stdout
    resumed = snakemake(*args, merged, timeout=600)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert (run_copy / merged).read_bytes() == before


def test_a_killed_snakemake_continues_with_the_same_command(run_copy):
    """kill -9 of Snakemake itself: rerunning `bash scripts/run.sh ...` unlocks and finishes, same bytes."""
    table = run_copy / RESULTS / "table1.csv"
    before = table.read_bytes()
    command = ["bash", str(REPO / "scripts" / "run.sh"), *tiny_args(run_copy), str(RESULTS / "table1.csv"),
               "--forcerun", "train_prompt"]
    env = {**ENV, "CORES": "1"}
    job = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    incomplete = run_copy / ".snakemake" / "incomplete"
    deadline = time.monotonic() + 300
    while not (incomplete.exists() and any(incomplete.iterdir())):
        assert job.poll() is None and time.monotonic() < deadline, "no job started"
        time.sleep(0.2)
    os.kill(job.pid, signal.SIGKILL)  # run.sh execs snakemake: this is Snakemake itself
    job.wait(timeout=30)
    assert any((run_copy / ".snakemake" / "locks").iterdir()), "expected the killed run's lock to remain"
    deadline = time.monotonic() + 120  # its orphaned job may still be finishing
    while pids_in(run_copy, "dicap train_prompt"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "unlocking" in again.stderr
    assert table.read_bytes() == before


def test_counterfactual_ablations_run_by_name_over_the_main_run(run_copy):
    """Each ablation runs by its name and reuses the main run where its settings are config's own."""
    out = snakemake(*run_args(run_copy), "ablation_guidance_scale", "ablation_sampling", "ablation_true_cf", timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    expected = {"guidance_scale": ("guidance_scale", {0.0, 3.0, 10.0}), "sampling": ("sampling", {"random", "similarity", "centroid"}),
                "true_cf": ("counterfactuals", {"generated", "true"})}
    for ablation, (column, values) in expected.items():
        table = pd.read_csv(run_copy / RESULTS / "ablations" / f"{ablation}.csv")
        dicap = table[table["method"] == "dicap"]
        assert set(dicap[column]) == values, (ablation, dicap[column].tolist())
        assert dicap[["base", "novel", "hm", "valid", "faithful"]].notna().all().all(), ablation
        assert (run_copy / RESULTS / "ablations" / f"{ablation}.png").stat().st_size > 0


def test_prompt_ablations_train_what_they_say(run_copy, tiny_config):
    """config.test.yaml: n_ctxs [1, 4], cf_weights [0.25], cf_temperatures [0.5], cf_positive_weights [0.25]; each
    loss setting trains the readings whose loss reads it, and main has dicap and dicap_pos (not dicap_label)."""
    out = snakemake(*run_args(run_copy), "ablation_context", "ablation_loss", timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    context = pd.read_csv(run_copy / RESULTS / "ablations" / "context.csv")
    assert set(zip(context["method"], context["n_ctx"])) == {(m, n) for m in ("coop", *READINGS) for n in (1, 4)}
    loss = pd.read_csv(run_copy / RESULTS / "ablations" / "loss.csv")
    assert set(zip(loss["method"], loss["cf_weight"], loss["cf_temperature"], loss["cf_positive_weight"])) == {
        *((m, w, t, 1.0) for m in ("dicap", "dicap_pos") for w, t in ((1.0, 0.07), (0.25, 0.07), (1.0, 0.5))),
        *((m, 1.0, 0.07, 0.25) for m in ("dicap_pos", "dicap_label"))}
    for table in (context, loss):
        assert table[["base", "novel", "hm", "hm_std"]].notna().all().all()
        assert (table["seeds"] == len(tiny_config["seeds"])).all()
    for name in ("context", "loss"):
        assert (run_copy / RESULTS / "ablations" / f"{name}.png").stat().st_size > 0
    # the context lengths trained what they say: the saved context has n_ctx rows
    seed = tiny_config["seeds"][0]
    prompt = BUILD(layout.PROMPT, dataset=DATASET, variant=layout.context_variant(1), method="dicap", seed=seed)
    assert load_arrays(run_copy / prompt)["ctx"].shape[0] == 1


def test_report_gathers_tables_and_figures(run_copy):
    out = snakemake(*tiny_args(run_copy), "--report", str(RESULTS / "report.html"), timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    html = (run_copy / RESULTS / "report.html").read_text(errors="replace")
    for name in ("table1.csv", "counterfactual_audit.csv", "table1_bars.png", "reproduction.csv"):
        assert name in html, name
