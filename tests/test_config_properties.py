"""Property-based tests over the config schema: for random values of any key, the config is
either refused with one line per mistake naming the key, or accepted holding only finite
numbers; and with random data sizes the first stages of the tiny pipeline either refuse
with one line naming a key or write only finite outputs."""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

import tempfile

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from dicap.config import ConfigError, coerce_config, load_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
# Hypothesis keeps a cache (.hypothesis/) in the working directory: not in the shared checkout.
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="dicap-hypothesis-"))
CONFIG = load_config(ROOT / "config.yaml")


def _leaves(node, path=()):
    """Dotted paths of every scalar in config.yaml (list items by index)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i))
    else:
        yield path


# `suite` is left out: switching suites legitimately asks for other keys (data.root ...), more than one line
KEYS = [path for path in _leaves(CONFIG) if path != ("suite",)]


def _with(path: tuple, value) -> dict:
    out = copy.deepcopy(CONFIG)
    node = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return out


def _numbers(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _numbers(v)
    elif isinstance(node, list):
        for v in node:
            yield from _numbers(v)
    elif isinstance(node, float):
        yield node


VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**40), 2**40), st.booleans(), st.none(),
    st.text(max_size=6), st.sampled_from([0, 1, -1, 0.5, 1.5, 0.95, 2**32, 1e-300]),
)
# what Snakemake hands over for a value inside a --config map: a string
TEXTS = st.one_of(
    st.text(max_size=6), VALUES.map(str),
    st.sampled_from([".nan", ".inf", "-.inf", "1e400", "2e-3", "0x10", "true", "null", "~", "[1]", "{a: 1}", "!!float nan", "["]),
)


def _check(config: dict, path: tuple) -> None:
    key = ".".join(map(str, path))
    owners = {key, ".".join(map(str, path[:-1]))} if isinstance(path[-1], int) else {key}  # a list item, or the list
    try:
        accepted = validate_config(coerce_config(config))
    except ConfigError as err:
        lines = str(err).splitlines()
        assert len(lines) == 1, lines
        assert any(f"'{k}'" in lines[0] for k in owners), lines[0]
        return
    assert all(math.isfinite(x) for x in _numbers(accepted)), key


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(KEYS), value=VALUES)
def test_any_value_of_any_key_is_refused_in_one_line_or_finite(path, value):
    _check(_with(path, value), path)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(KEYS), text=TEXTS)
def test_any_command_line_string_is_refused_in_one_line_or_finite(path, text):
    _check(_with(path, text), path)


# --- the first stages of the tiny pipeline --------------------------------------------------------------

BAD_COUNT = st.sampled_from([0, -1, float("nan"), float("inf"), 2.5, "x"])
# key -> (valid values, invalid values); small sizes keep a stage run under a second
DATA_KEYS = {
    "image_size": (st.integers(8, 20), st.sampled_from([7, -1, float("nan"), float("inf"), 16.5])),
    "pretrain_per_class": (st.integers(1, 3), BAD_COUNT),
    "pool_per_class": (st.integers(1, 6), BAD_COUNT),
    "val_per_class": (st.integers(1, 2), BAD_COUNT),
    "test_per_class": (st.integers(1, 2), BAD_COUNT),
    "shots": (st.integers(1, 4), BAD_COUNT),
    "spurious_strength": (st.floats(0, 1), st.sampled_from([-0.5, 1.5, float("nan"), float("inf")])),
    "render_seed": (st.integers(0, 3), st.sampled_from([-1, 2**40])),
}


@st.composite
def DATA(draw) -> dict:
    """Data sizes with none, one or two keys made invalid, so that many draws reach the stages."""
    bad = draw(st.sets(st.sampled_from(sorted(DATA_KEYS)), max_size=2))
    return {k: draw(invalid if k in bad else valid) for k, (valid, invalid) in DATA_KEYS.items()}


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=DATA())
@example(data={"image_size": 8, "pretrain_per_class": 1, "pool_per_class": 1, "val_per_class": 1, "test_per_class": 1,
               "shots": 3, "spurious_strength": 0.5, "render_seed": 0})  # more shots than the pool: refused at make-split
@example(data={**{k: 1 for k in DATA_KEYS}, "image_size": 8, "spurious_strength": float("nan")})
def test_random_data_sizes_are_refused_naming_the_key_or_stages_write_finite_outputs(data, tmp_path_factory, caplog):
    from dicap.cli import main
    from dicap.config import as_json

    config = copy.deepcopy(CONFIG)
    config["data"].update(data)
    try:
        validate_config(coerce_config(config))
    except ConfigError as err:
        for line in str(err).splitlines():
            assert line.startswith("config: key 'data.") and ": must be " in line, line
        return
    work = tmp_path_factory.mktemp("stages")
    split_params = {k: config["data"][k] for k in ("shots", "spurious_strength")}  # rules/common.smk SPLIT_PARAMS
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="dicap"):
        codes = [main(["prepare_dataset", "--dataset", "shapes", "--params", as_json(config["data"]), "--out", str(work / "data")])]
        if codes[0] == 0:
            codes.append(main(["make_split", "--dataset-dir", str(work / "data"), "--seed", "1",
                               "--params", json.dumps(split_params), "--out", str(work / "split.parquet")]))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    if codes[-1] != 0:  # refused at run time: one line that names the key to change
        assert len(errors) == 1 and "\n" not in errors[0] and "'data." in errors[0], errors
        assert not (work / "split.parquet").exists()
        return
    from dicap.io import load_arrays

    for name, images in load_arrays(work / "data" / "images.safetensors").items():
        assert images.dtype == np.uint8 and images.shape[1:] == (data["image_size"], data["image_size"], 3), name
    for table in (pd.read_parquet(work / "data" / "factors.parquet"), pd.read_parquet(work / "split.parquet")):
        floats = table.select_dtypes("number").to_numpy(dtype=float)
        assert np.isfinite(floats).all()
    assert len(pd.read_parquet(work / "split.parquet")) == data["shots"] * 5  # one draw per base class
