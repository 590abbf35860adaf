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
from helpers import with_key as _with

ROOT = Path(__file__).resolve().parents[1]


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
        ("counterfactual.guidance_scale", "5", "counterfactual.guidance_scale"),  # wrong type
        ("data.shots", -1, "data.shots"),              # out of range
        ("data.spurious_strength", 1.5, "data.spurious_strength"),
        ("counterfactual.inversion_depth", 0, "counterfactual.inversion_depth"),
        ("seeds", [], "seeds"),                        # empty list
        ("seeds", [1, 1], "seeds"),
        ("methods", ["coop", "dicap_coop"], "methods.1"),
        ("counterfactual.guide", "clips", "counterfactual.guide"),
        ("clip.template", "a photo of a", "clip.template"),
        ("tasks.datasets.vqa", ["vqav2"], "tasks.datasets"),  # the embedded suite uses its own datasets
        ("tasks.datasets.captions", ["flickr30k"], "tasks.datasets.captions"),
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


# --- finite, ranged numbers; one line per mistake ----------------------------------------------------


@pytest.mark.parametrize(
    "value,shown", [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf"), (-1, "-1"), ("five", "'five'")]
)
def test_guidance_scale_must_be_a_finite_number_at_least_zero(config, value, shown):
    """Today NaN and infinity pass ``minimum: 0``, and every counterfactual comes out black."""
    with pytest.raises(ConfigError) as info:
        validate_config(_with(config, "counterfactual.guidance_scale", value))
    assert str(info.value) == f"config: key 'counterfactual.guidance_scale' = {shown}: must be a finite number >= 0"


@pytest.mark.parametrize(
    "dotted,value,line",
    [
        ("counterfactual.inversion_depth", 1.0, "= 1.0: must be a finite number in (0, 0.95]"),
        ("counterfactual.inversion_depth", float("nan"), "= nan: must be a finite number in (0, 0.95]"),
        ("prompt.lr", 0, "= 0: must be a finite number > 0"),
        ("prompt.cf_temperature", float("inf"), "= inf: must be a finite number > 0"),
        ("data.spurious_strength", float("nan"), "= nan: must be a finite number in [0, 1]"),
        ("diffusion.train.label_dropout", 1.5, "= 1.5: must be a finite number in [0, 1]"),
        ("clip.train.steps", 0, "= 0: must be an integer >= 1"),
        ("prompt.epochs", 0, "= 0: must be an integer >= 1"),
        ("counterfactual.shards", 0, "= 0: must be an integer >= 1"),
        ("seeds", [2**40], "= 1099511627776: must be an integer in [0, 4294967295]"),
        ("ablations.guidance_scales", [1, float("nan")], "= nan: must be a finite number >= 0"),
        ("report.figure_guidance_scales", [float("inf")], "= inf: must be a finite number >= 0"),
        ("clip.model.embed_dim", float("nan"), "= nan: must be a finite number"),  # free-form block
        ("counterfactual.guide", "clips", "= 'clips': must be one of cfg, classifier, clip"),
        ("tasks.percent", 0, "= 0: must be a finite number in (0, 100]"),
        ("tasks.percent", 101, "= 101: must be a finite number in (0, 100]"),
        ("tasks.vqa_answers", 0, "= 0: must be an integer >= 1"),
    ],
)
def test_out_of_range_values_give_one_line_naming_key_value_and_range(config, dotted, value, line):
    with pytest.raises(ConfigError) as info:
        validate_config(_with(config, dotted, value))
    message = str(info.value)
    assert "\n" not in message and message.startswith("config: key '") and message.endswith(line), message


def test_every_number_in_the_schema_is_ranged():
    """Each numeric key has a lower bound; each fraction (label_dropout, spurious_strength,
    inversion_depth) an upper one; finiteness is enforced for every number by the validator."""
    from dicap.config import _resolve, schema

    def walk(node, path):
        node = _resolve(node)
        types = node.get("type", [])
        types = [types] if isinstance(types, str) else types
        if {"integer", "number"} & set(types):
            yield path, node
        for name, child in node.get("properties", {}).items():
            yield from walk(child, f"{path}.{name}".lstrip("."))
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{path}[]")

    numeric = dict(walk(schema(), ""))
    assert len(numeric) > 30
    unbounded = [p for p, n in numeric.items() if "minimum" not in n and "exclusiveMinimum" not in n]
    assert unbounded == []
    for fraction in ("data.spurious_strength", "diffusion.train.label_dropout", "counterfactual.inversion_depth"):
        assert "maximum" in numeric[fraction] and numeric[fraction]["maximum"] <= 1


# --- --config values arrive as strings: read them by the schema's types --------------------------------


def test_command_line_strings_are_read_by_the_schemas_types(config):
    from dicap.config import coerce_config

    cli = copy.deepcopy(config)
    cli["seeds"] = ["1"]  # --config seeds='[1]'
    cli["counterfactual"] = {**cli["counterfactual"], "shards": "4", "guidance_scale": "5", "inversion_depth": "0.5"}
    cli["prompt"] = {**cli["prompt"], "ctx_init": "a photo of a", "lr": "2e-3"}
    cli["clip"]["model"] = {**cli["clip"]["model"], "embed_dim": "64"}  # free-form block: read as YAML
    out = validate_config(coerce_config(cli))
    assert out["seeds"] == [1] and out["counterfactual"]["shards"] == 4
    assert out["counterfactual"]["guidance_scale"] == 5 and out["counterfactual"]["inversion_depth"] == 0.5
    assert out["prompt"]["lr"] == 0.002 and out["prompt"]["ctx_init"] == "a photo of a"
    assert out["clip"]["model"]["embed_dim"] == 64
    assert coerce_config(config) == config  # a config read from YAML is left as it is


@pytest.mark.parametrize(
    "dotted,text,line",
    [
        ("counterfactual.guidance_scale", ".nan", "config: key 'counterfactual.guidance_scale' = nan: must be a finite number >= 0"),
        ("counterfactual.guidance_scale", ".inf", "config: key 'counterfactual.guidance_scale' = inf: must be a finite number >= 0"),
        ("counterfactual.guidance_scale", "-1", "config: key 'counterfactual.guidance_scale' = -1: must be a finite number >= 0"),
        ("counterfactual.guidance_scale", "five", "config: key 'counterfactual.guidance_scale' = 'five': must be a finite number >= 0"),
        ("counterfactual.shards", "2.5", "config: key 'counterfactual.shards' = 2.5: must be an integer >= 1"),
        ("counterfactual.guide", "3", "config: key 'counterfactual.guide' = '3': must be one of cfg, classifier, clip"),
    ],
)
def test_command_line_strings_that_do_not_fit_are_refused_naming_the_key(config, dotted, text, line):
    from dicap.config import coerce_config

    with pytest.raises(ConfigError) as info:
        validate_config(coerce_config(_with(config, dotted, text)))
    assert str(info.value) == line


# --- YAML syntax errors name file, line and column ------------------------------------------------------


def test_a_tab_indented_block_names_file_line_and_column(tmp_path):
    from dicap.config import check_yaml_syntax

    bad = tmp_path / "config.yaml"
    bad.write_text((ROOT / "config.yaml").read_text().replace("\n  shots: 16", "\n\tshots: 16"))
    line = 1 + bad.read_text().split("\n").index("\tshots: 16")
    expected = f"{bad}:{line}:1: not valid YAML: found character '\\t' that cannot start any token"
    for check in (check_yaml_syntax, load_config):
        with pytest.raises(ConfigError) as info:
            check(bad)
        assert str(info.value).startswith(expected) and "never tabs" in str(info.value)
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{bad}:2:1: not valid YAML: expected ',' or '\]'"):
        check_yaml_syntax(bad)
    check_yaml_syntax(tmp_path / "absent.yaml")  # a missing file is Snakemake's to report
