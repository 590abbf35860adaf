"""What the ``evaluate`` job logs (jobs/evaluate.py): the accuracies it wrote, one line per method."""

from __future__ import annotations

import pandas as pd
import pytest

from dicap.jobs.evaluate import _accuracy_lines


def _table(methods: list[str], splits: list[str]) -> pd.DataFrame:
    rows = [{"method": m, "seed": 1, "split": s, "base": 10.0 * i + j, "novel": 5.0 * i + j + 0.125, "hm": 7.0 * i + j + 0.004}
            for i, m in enumerate(methods) for j, s in enumerate(splits)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("methods, splits", [
    (["zeroshot"], ["test"]),
    (["coop", "dicap", "zeroshot"], ["test"]),
    (["dicap", "coop"], ["test_unbiased", "test_aligned", "test_conflict"]),
])
def test_one_line_per_method_with_every_split_it_wrote(methods, splits):
    table = _table(methods, splits)
    lines = _accuracy_lines(table)
    assert [line.split(":", 1)[0] for line in lines] == methods  # the table's order
    for line, (method, rows) in zip(lines, table.groupby("method", sort=False)):
        for r in rows.itertuples():
            assert f"{r.split} HM {r.hm:.2f} (base {r.base:.2f}, novel {r.novel:.2f})" in line
        assert line.count(" HM ") == len(splits)
