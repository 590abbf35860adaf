"""The data jobs (jobs/data.py) as the command line runs them: ``dicap prepare_shifts`` writes a shift
store whose test splits are the shifts asked for, and refuses an unknown shift in one line; make_split
draws the split its params name: the base half, or every class where the plan's ``all`` kind (the
all_classes variant) adds ``classes: all``."""

from __future__ import annotations

import json
import logging

import pytest

from dicap.cli import main
from dicap.data import embedded
from dicap.data.store import DatasetStore
from dicap.io import read_table
from dicap.jobs.data import make_split
from dicap.plan import Plan
from helpers import SIZES


def _prepare_shifts(out, *shifts):
    return ["prepare_shifts", "--dataset", "digits", "--params", json.dumps({"image_size": 8, "downstream_style": "faded"}),
            "--seed", "2", "--out", str(out), "--shifts", *shifts, "--per-class", "2"]


@pytest.mark.parametrize("shifts", [["style"], ["object_colour", "noise", "background"]])
def test_prepare_shifts_renders_the_shifts_asked_for(tmp_path, shifts):
    assert main(_prepare_shifts(tmp_path / "dg", *shifts)) == 0
    store = DatasetStore.open(tmp_path / "dg")
    assert store.test_splits == ["unshifted", *shifts] and store.render_seed == 2
    assert len(store.split(shifts[0])) == 2 * len(store.classes)


def test_prepare_shifts_refuses_an_unknown_shift_in_one_line(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="dicap"):
        assert main(_prepare_shifts(tmp_path / "dg", "noise", "rotation")) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["unknown shift 'rotation'; known: background, object_colour, style, noise"]
    assert not (tmp_path / "dg").exists()


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
