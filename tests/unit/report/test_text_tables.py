"""Tables 2 and 3 (report/text_tables.py): mean and std over seeds, and markdown."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dicap.report.text_tables import build_task_table, task_markdown


def test_task_table_mean_and_std_over_seeds(tmp_path):
    files = []
    for seed, r1 in ((1, 40.0), (2, 60.0)):
        path = tmp_path / "tasks" / "retrieval" / "metrics" / "shapes" / f"seed{seed}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([{"method": "zeroshot", "seed": seed, "i2t_r1": 30.0, "split": "test_unbiased"},
                      {"method": "dicap", "seed": seed, "i2t_r1": r1, "split": "test_unbiased"}]).to_csv(path, index=False)
        files.append(path)
    table = build_task_table("retrieval", "embedded", ["shapes"], files)
    assert list(table["method"]) == ["zeroshot", "dicap"]
    dicap = table.set_index("method").loc["dicap"]
    assert dicap["i2t_r1"] == 50 and dicap["i2t_r1_std"] == pytest.approx(np.std([40, 60], ddof=1), abs=1e-4) and dicap["seeds"] == "1 2"
    assert "50.00 ± 14.14" in task_markdown("retrieval", table)
    with pytest.raises(ValueError, match="not a vqa metrics file"):
        build_task_table("vqa", "embedded", ["shapes"], files)
    moved = tmp_path / "tasks" / "retrieval" / "metrics" / "shapes" / "seed3.csv"
    moved.write_bytes(files[0].read_bytes())
    with pytest.raises(ValueError, match="its path says seed 3"):
        build_task_table("retrieval", "embedded", ["shapes"], [moved])
