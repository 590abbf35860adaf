"""One-off runs never touch the main run (src/dicap/runs.py, docs/running.md#runs): typed as the
README types them, from the root of a checkout, with no --directory."""

from __future__ import annotations

import json

from snakemake_runner import snakemake, tiny_checkout

DATA = "build/embedded/data/shapes/factors.parquet"


def test_an_override_renders_in_its_own_folder_and_the_main_run_is_untouched(tmp_path):
    root = tmp_path / "checkout"
    root.mkdir()
    tiny_checkout(root)
    (root / "results" / "table1.csv").write_text("the main run's table\n")

    out = snakemake("--cores", "2", DATA, "--config", "data={pretrain_spurious_strength: 0.5}", cwd=root, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    made = list((root / "runs").glob(f"config-*/{DATA}"))
    assert len(made) == 1, sorted(str(p) for p in (root / "runs").rglob("*"))[:20]
    folder = root / "runs" / made[0].relative_to(root / "runs").parts[0]
    assert f"every output goes under runs/{folder.name}/" in out.stderr
    assert not (root / "build").exists(), "the override re-rendered the main run's data"
    assert (root / "results" / "table1.csv").read_text() == "the main run's table\n"
    assert (folder / ".snakemake").is_dir() and (folder / "logs" / "prepare_dataset").is_dir(), "records and logs stay in the run"

    again = snakemake("--cores", "2", DATA, "--config", "data={pretrain_spurious_strength: 0.5}", cwd=root)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, "the same override finds its folder"

    named = snakemake("-n", "--cores", "2", "results/table1.csv", "--config", "run=mine", cwd=root)
    assert named.returncode == 0 and "every output goes under runs/mine/" in named.stderr, named.stderr[-2000:]


def test_results_of_the_other_suite_stop_the_run_in_one_line(tmp_path):
    """Both suites write results/table1.csv; a pulled table carries no Snakemake record, and the
    paper suite planned nothing over the embedded suite's (issue 27)."""
    root = tmp_path / "checkout"
    root.mkdir()
    tiny_checkout(root)
    (root / "results" / "table1.provenance.json").write_text(json.dumps({"params": {"suite": "embedded"}}))
    paper = ["-n", "results/table1.csv", "--configfile", "config.yaml", "config.paper.yaml"]
    out = snakemake(*paper, cwd=root)
    assert out.returncode != 0
    line = ("results/ holds the embedded suite's tables (results/table1.provenance.json), and this is the paper suite: "
            "give it a folder of its own with --config run=paper, or move results/ away")
    assert line in (out.stdout + out.stderr).splitlines(), (out.stdout + out.stderr)[-2000:]
    ok = snakemake(*paper, "--config", "run=paper", cwd=root)
    assert ok.returncode == 0 and "rule table1" in ok.stdout, (ok.stdout + ok.stderr)[-2000:]
