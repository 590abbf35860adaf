"""What a variant trains on (counterfactual/training_set.py): its split and counterfactual table
are read through dicap.io, so a damaged one names itself and the job removes it."""

from __future__ import annotations

import pandas as pd
import pytest

from dicap import layout
from dicap.counterfactual.shards import GENERATED
from dicap.counterfactual.training_set import training_set
from dicap.io import save_arrays, write_table
from helpers import assert_corrupt, truncated_table


@pytest.mark.parametrize("damaged", ["split", "table"])
def test_a_truncated_split_or_counterfactual_table_names_itself(tmp_path, damaged):
    paths = {"split": tmp_path / "split.parquet", "table": tmp_path / "counterfactuals.parquet"}
    write_table(paths["split"], pd.DataFrame({"label": [0, 1]}))
    write_table(paths["table"], pd.DataFrame({"y_cf": [1, 0]}))
    images = tmp_path / "counterfactuals.safetensors"
    save_arrays(images, {GENERATED: pd.DataFrame({"x": [0, 0]}).to_numpy()})
    assert training_set(paths["split"], layout.MAIN, images, paths["table"])["cf_labels"].tolist() == [1, 0]
    truncated_table(paths[damaged])
    assert_corrupt(paths[damaged], training_set, paths["split"], layout.MAIN, images, paths["table"])
