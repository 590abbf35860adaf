"""make_split (jobs/data.py) draws the split its params name: the base half, or every class
where the plan's ``all`` kind (the all_classes variant) adds ``classes: all``."""

from __future__ import annotations

import pytest

from dicap.data import embedded
from dicap.data.store import DatasetStore
from dicap.io import read_table
from dicap.jobs.data import make_split
from dicap.plan import Plan
from helpers import SIZES


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store") / "data"
    embedded.build("shapes", SIZES, 0, root)
    return root


@pytest.mark.parametrize("shots", [1, 2])
@pytest.mark.parametrize("kind, every", [("shots", False), ("unbiased", False), ("all", True)])
def test_make_split_draws_the_classes_its_params_name(config, store, tmp_path, kind, every, shots):
    params = Plan(config).split_params[kind] | {"shots": shots, "spurious_strength": None}
    make_split(store, 1, params, tmp_path / "split.parquet")
    opened = DatasetStore.open(store)
    want = range(len(opened.classes)) if every else opened.base_classes
    assert read_table(tmp_path / "split.parquet").groupby("label").size().to_dict() == {c: shots for c in want}
