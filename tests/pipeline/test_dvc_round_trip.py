"""DVC over the workflow: the cluster-to-laptop round trip on a tiny checkout."""

from __future__ import annotations

import json
import os
import shutil

import yaml

from snakemake_runner import BIN, DVC, job_counts, run, tiny_checkout

EXPENSIVE = ("prepare_dataset", "make_split", "clip_backbone", "diffusion_backbone", "oracle",
             "counterfactual_shard", "merge_counterfactuals", "encode_train_features", "encode_eval_features")


def test_cluster_to_laptop_round_trip(tmp_path):
    """Build and push on one checkout; clone, pull, and nothing expensive is planned again."""
    origin, clone, remote = tmp_path / "origin", tmp_path / "clone", tmp_path / "remote"
    origin.mkdir()
    tiny_checkout(origin)
    git = ("git", "-c", "user.name=t", "-c", "user.email=t@t")
    run("git", "init", "-q", cwd=origin)
    run(DVC, "remote", "modify", "--local", "local", "url", str(remote), cwd=origin)
    run(*git, "add", "-A", cwd=origin)
    run(*git, "commit", "-qm", "tiny", cwd=origin)

    # As docs/dvc.md records: the README's run, then only the stages that are shared (no ablation)
    run("bash", "scripts/run.sh", cwd=origin, timeout=1800)
    run(DVC, "commit", "-f", "artifacts", "results", cwd=origin)
    assert run(DVC, "status", "artifacts", "results", cwd=origin).stdout.strip() == "Data and pipelines are up to date."
    run(DVC, "push", cwd=origin)
    run(*git, "add", "-A", cwd=origin)
    run(*git, "commit", "-qm", "results", cwd=origin)
    table = (origin / "results" / "table1.csv").read_bytes()

    run("git", "clone", "-q", str(origin), str(clone), cwd=tmp_path)
    run(DVC, "remote", "modify", "--local", "local", "url", str(remote), cwd=clone)
    run("bash", "scripts/pull.sh", cwd=clone)
    assert run(DVC, "status", "artifacts", "results", cwd=clone).stdout.strip() == "Data and pipelines are up to date."
    # Bare `snakemake -n` (all: the figures' guidance-scale variants, the shortcut controls) too (issue 29.1)
    dry = run(str(BIN / "snakemake"), "-n", cwd=clone).stdout
    everything = job_counts(dry) if "Job stats:" in dry else {}  # none at all: "Nothing to be done"
    assert not {r: everything[r] for r in EXPENSIVE if r in everything}, (everything, dry[-3000:])
    for name in ("table1.csv", "table1.md", "table1.provenance.json"):
        (clone / "results" / name).unlink()
    shutil.rmtree(clone / "results" / "table1_metrics")
    plan = run(str(BIN / "snakemake"), "-n", "results/table1.csv", cwd=clone)
    counts = job_counts(plan.stdout)
    assert counts.get("train_prompt") and not {r: counts[r] for r in EXPENSIVE if r in counts}, counts
    run(str(BIN / "snakemake"), "--cores", "2", "results/table1.csv", cwd=clone, timeout=600)
    assert (clone / "results" / "table1.csv").read_bytes() == table

    # A prompt setting changes only the results stage; `dvc metrics diff` compares the two commits.
    config = yaml.safe_load((origin / "config.yaml").read_text())
    config["prompt"]["epochs"] += 2
    (origin / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    repro = run(DVC, "repro", "results", cwd=origin, timeout=900)
    assert "'artifacts' didn't change" in repro.stdout, repro.stdout[-2000:]
    run(*git, "commit", "-qam", "longer prompt training", cwd=origin)
    diff = run(DVC, "metrics", "diff", "HEAD~1", "HEAD", "--json", cwd=origin).stdout
    changed = json.loads(diff)["results/table1_metrics/average.json"]  # one file per dataset, a key per method
    assert "coop" in changed, sorted(changed)
    assert os.path.getsize(origin / "results" / "reproduction.md") > 0
