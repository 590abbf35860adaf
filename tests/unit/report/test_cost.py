"""results/cost.csv: Snakemake benchmark files summarised per rule."""

from __future__ import annotations

import pytest

from dicap.report.cost import cost_table, read_benchmarks

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path, seconds, rss):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t10\t1\n")


def test_cost_table_sums_per_rule(tmp_path):
    _bench(tmp_path / "train_prompt" / "shapes" / "main" / "coop" / "seed1.tsv", 2.0, 100)
    _bench(tmp_path / "train_prompt" / "shapes" / "main" / "dicap" / "seed1.tsv", 4.0, 300)
    _bench(tmp_path / "table1.tsv", 1.0, "-")  # too fast for a memory sample
    table = cost_table(read_benchmarks(tmp_path), "embedded").set_index("rule")
    assert table.loc["train_prompt", "jobs"] == 2
    assert table.loc["train_prompt", "wall_s_total"] == 6.0 and table.loc["train_prompt", "wall_s_max"] == 4.0
    assert table.loc["train_prompt", "max_rss_mb"] == 300
    assert table.loc["table1", "jobs"] == 1 and table["suite"].eq("embedded").all()
    assert list(table.index) == ["train_prompt", "table1"]  # most expensive first


def test_a_file_that_is_not_a_benchmark_is_named(tmp_path):
    bad = tmp_path / "evaluate" / "x.tsv"
    bad.parent.mkdir()
    bad.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="evaluate/x.tsv"):
        read_benchmarks(tmp_path)
