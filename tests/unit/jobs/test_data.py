"""The data jobs (jobs/data.py) as the command line runs them: ``dicap prepare_shifts`` writes a shift
store whose test splits are the shifts asked for, and refuses an unknown shift in one line."""

from __future__ import annotations

import json
import logging

import pytest

from dicap.cli import main
from dicap.data.store import DatasetStore


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
