"""Config validation against the schema, and atomic file output."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from dicap.config import ConfigError, load_config, validate_config
from dicap.io import atomic_output, read_json, write_json, write_table

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config(ROOT / "config.yaml")


def _with(config: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(config)
    *parents, last = dotted.split(".")
    node = out
    for p in parents:
        node = node[p]
    node[last] = value
    return out


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_config_yaml_loads(config):
    assert config["datasets"] == ["shapes", "digits"]
    assert config["prompt"]["n_ctx"] == len(config["prompt"]["ctx_init"].split())
    assert "{}" in config["clip"]["template"]


def test_test_config_merged_over_main_is_valid(config):
    merged = _deep_merge(config, yaml.safe_load((ROOT / "tests" / "config.test.yaml").read_text()))
    assert validate_config(merged) is merged


@pytest.mark.parametrize(
    "dotted,value,expected",
    [
        ("epochz", 3, "epochz"),                       # unknown top-level key
        ("prompt.epoch", 3, "prompt.epoch"),           # unknown nested key (typo of epochs)
        ("diffusion.train.stepz", 3, "diffusion.train.stepz"),
        ("counterfactual.scale", "5", "counterfactual.scale"),  # wrong type
        ("data.shots", -1, "data.shots"),              # out of range
        ("data.spurious_strength", 1.5, "data.spurious_strength"),
        ("counterfactual.inversion_depth", 0, "counterfactual.inversion_depth"),
        ("seeds", [], "seeds"),                        # empty list
        ("seeds", [1, 1], "seeds"),
        ("methods", ["coop", "cocoop"], "methods.1"),
        ("counterfactual.guide", "clips", "counterfactual.guide"),
        ("clip.template", "a photo of a", "clip.template"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_key(config, dotted, value, expected):
    with pytest.raises(ConfigError) as info:
        validate_config(_with(config, dotted, value))
    assert f"'{expected}'" in str(info.value)


def test_missing_required_key_is_named(config):
    broken = copy.deepcopy(config)
    del broken["prompt"]["epochs"]
    with pytest.raises(ConfigError, match=r"'prompt'.*'epochs'"):
        validate_config(broken)


def test_every_violation_is_reported(config):
    broken = _with(_with(config, "data.shots", 0), "prompt.epoch", 1)
    with pytest.raises(ConfigError) as info:
        validate_config(broken)
    assert "data.shots" in str(info.value) and "prompt.epoch" in str(info.value)


def test_load_config_errors_name_the_file(tmp_path, config):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_with(config, "prompt.lr", 0)))
    with pytest.raises(ConfigError, match=r"bad\.yaml.*prompt\.lr"):
        load_config(bad)
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


# --- atomic output ------------------------------------------------------------------------------------


def test_atomic_output_writes_on_success(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json(target, {"a": 1})
    assert read_json(target) == {"a": 1}
    assert os.listdir(target.parent) == ["out.json"]


def test_atomic_output_keeps_old_content_when_body_raises(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(target) as tmp:
            tmp.write_text("half-written new")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["result.txt"]


def test_atomic_output_leaves_no_file_when_body_raises(tmp_path):
    target = tmp_path / "never.csv"
    with pytest.raises(KeyError):
        with atomic_output(target) as tmp:
            tmp.write_text("x")
            raise KeyError("missing")
    assert os.listdir(tmp_path) == []


def test_write_error_names_the_path(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()  # a directory where the file should go: the final rename fails
    with pytest.raises(OSError) as info:
        write_json(target, {"a": 1})
    assert str(target) in str(info.value)
    assert os.listdir(tmp_path) == ["taken"] and os.listdir(target) == []


def test_os_error_in_body_names_the_path(tmp_path):
    import pandas as pd

    target = tmp_path / "table.parquet"

    class Unwritable(pd.DataFrame):
        def to_parquet(self, *args, **kwargs):
            raise PermissionError(13, "Permission denied")

    with pytest.raises(OSError) as info:
        write_table(target, Unwritable({"a": [1]}))
    assert str(target) in str(info.value)
    assert not target.exists() and os.listdir(tmp_path) == []


def test_write_json_is_canonical(tmp_path):
    target = tmp_path / "x.json"
    write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2, sort_keys=True) + "\n"


def test_disk_full_keeps_the_old_output_and_names_the_path(tmp_path, monkeypatch):
    import errno

    import numpy as np
    import safetensors.numpy

    from dicap.io import load_arrays, save_arrays

    target = tmp_path / "features.safetensors"
    save_arrays(target, {"x": np.ones(3, np.float32)})

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.numpy, "save_file", full_disk)
    with pytest.raises(OSError, match=f"could not write {target}: No space left on device"):
        save_arrays(target, {"x": np.zeros(3, np.float32)})
    assert np.array_equal(load_arrays(target)["x"], np.ones(3, np.float32))
    assert os.listdir(tmp_path) == ["features.safetensors"]


def test_a_failed_model_directory_keeps_the_old_one(tmp_path):
    from dicap.io import atomic_dir

    model = tmp_path / "clip"
    model.mkdir()
    (model / "weights").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(model) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed while training")
    assert (model / "weights").read_text() == "old"
    assert os.listdir(tmp_path) == ["clip"]
