"""The rules as Snakemake itself lists them: every rule a job found by its name (a subprocess, so
not in the unit tier's tests/unit/test_structure.py, which reads the rule files as text)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dicap import cli
from helpers import REPO, rules_by_file


def test_every_rule_name_is_a_job_found_by_name():
    out = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "--list-rules"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    rules = set(out.stdout.split()) - {"all", "artifacts"}
    assert {"counterfactual_shard", "table1", "figure_table1", "audit_summary", "ablation_true_cf"} <= rules
    assert rules == {n for names in rules_by_file().values() for n in names if "{" not in n} | {
        n for n in rules if n.startswith("ablation_")}
    jobs = cli.jobs()
    assert set(jobs) - rules == set(cli.TOOLS)  # the maintainer's commands and the warm worker
