"""The maintainer's commands (tools.py): the reference tables job and its check, the budget."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from dicap import budget, tools
from dicap.config import load_config
from dicap.io import read_json
from dicap.plan import Plan
from dicap.report.readme import README_MARKERS
from dicap.tools import readme_results, record_reference
from helpers import REPO

REFERENCE = REPO / "results" / "reference" / "embedded.csv"


def test_the_job_writes_the_tables_and_its_check_fails_on_a_stale_file(tmp_path):
    out, readme = tmp_path / "embedded.md", tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text())
    with pytest.raises(ValueError, match="differs from .*embedded.csv: run dicap readme_results"):
        readme_results(REFERENCE, out, check=True, readme=readme)
    readme_results(REFERENCE, out, readme=readme)
    readme_results(REFERENCE, out, check=True, readme=readme)
    assert out.read_text() == (REPO / "results" / "reference" / "embedded.md").read_text()
    assert readme.read_text() == (REPO / "README.md").read_text()  # the committed README holds the reference's paragraph
    start, end = README_MARKERS
    readme.write_text(readme.read_text().replace(end, "DiCap wins everywhere.\n" + end))  # a typed claim
    with pytest.raises(ValueError, match="README.md's transfer paragraphs differ"):
        readme_results(REFERENCE, out, check=True, readme=readme)
    readme.write_text("# no block\n")
    with pytest.raises(ValueError, match="no <!-- transfer"):
        readme_results(REFERENCE, out, readme=readme)


def test_the_recorded_reference_carries_each_numbers_seed_spread_and_the_cpu(tmp_path):
    pd.DataFrame({"suite": "embedded", "split": "test_unbiased", "dataset": ["digits"] * 2, "method": ["coop", "average"],
                  "base": [70.0, 71.0], "base_std": [2.5, None], "novel": [50.0, 51.0], "novel_std": [1.5, None],
                  "hm": [58.3, 59.3], "hm_std": [1.0, None], "seeds": "1 2 3"}).to_csv(tmp_path / "table1.csv", index=False)
    (tmp_path / "table1.provenance.json").write_text('{"config_hash": "abc"}')
    record_reference(tmp_path / "table1.csv", tmp_path / "embedded.csv")
    reference = pd.read_csv(tmp_path / "embedded.csv").set_index(["method", "metric"])
    assert reference.loc[("coop", "base"), ["value", "std", "n"]].tolist() == [70.0, 2.5, 3]
    assert reference.loc[("average", "hm"), ["std", "n"]].isna().all()  # the average row has no seed spread
    machine = read_json(tmp_path / "embedded.machine.json")
    assert machine["config_hash"] == "abc" and {"vendor", "family", "model", "model_name", "simd"} <= set(machine["cpu"])


def test_the_budget_prints_every_stage_the_total_and_the_source(capsys):
    paper = load_config(REPO / "config.paper.yaml")
    tools.budget([REPO / "config.yaml", REPO / "config.paper.yaml"], datasets=["eurosat", "imagenet"], seeds=[1])
    out = capsys.readouterr().out
    stages = budget.estimate(Plan({**paper, "datasets": ["eurosat", "imagenet"], "seeds": [1]}))
    for s in stages:
        assert f"| {s.rule} | {s.jobs} | {s.gpu_jobs} |" in out
    total = sum(s.gpu_hours for s in stages)
    assert f"| {total:.1f} |" in out and f"ask for {math.ceil(total * budget.costs()['allocation_margin'])} GPU-hours" in out
    assert "H200" in out and "budget.yaml" in out and "(estimate)" in out
    with pytest.raises(ValueError, match="key 'seeds'"):  # a config the schema refuses names its key
        tools.budget([REPO / "config.yaml", REPO / "config.paper.yaml"], seeds=[])
    with pytest.raises(ValueError, match="key 'suite' = 'embedded'"):
        tools.budget([REPO / "config.yaml"])


def test_the_documented_paper_budget_is_what_the_command_prints(capsys):
    """docs/cluster.md quotes `dicap budget ... --table1-only` whole: a new cost or plan changes both."""
    tools.budget([REPO / "config.yaml", REPO / "config.paper.yaml"], table1_only=True)
    table = capsys.readouterr().out.split("\ncosts:")[0]  # the table and what to ask for
    assert table.count("|\n") > 5 and table in (REPO / "docs/cluster.md").read_text()


def test_table1_only_leaves_the_transfer_tables_out_and_the_whole_study_counts_them(capsys):
    for table1_only in (True, False):
        tools.budget([REPO / "config.yaml", REPO / "config.paper.yaml"], table1_only=table1_only)
        out = capsys.readouterr().out
        rows = ("| encode_target_features | 15 |", "| evaluate_transfer | 45 |", "| counterfactual_shard (all_classes) | 12 |")
        assert all((row in out) != table1_only for row in rows)
        assert ("| train_task_prompt |" in out) != table1_only
    total, ask = re.search(r"\| total \| \d+ \| \d+ \| \| \| ([\d.]+) \|.*\n\nask for (\d+) GPU-hours", out).groups()
    docs, readme = (REPO / "docs/cluster.md").read_text(), (REPO / "README.md").read_text()
    assert f"the whole study is {total} GPU-hours ({ask} to ask for)" in " ".join(docs.split())  # the whole study's, quoted
    assert f"{round(float(total))} with the transfer tables too; ask for {ask})" in " ".join(readme.split())
