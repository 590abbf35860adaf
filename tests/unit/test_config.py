"""The config (config.py): validation against the schema naming the key, finite ranged numbers
in one line per mistake, command-line strings read by the schema's types, YAML errors by file,
line and column; the paper suite's config; and property-based tests over any key and value."""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dicap.config import ConfigError, coerce_config, load_config, validate_config
from helpers import REPO
from helpers import with_key as _with

pytestmark = pytest.mark.usefixtures("single_thread")


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
    merged = _deep_merge(config, yaml.safe_load((REPO / "tests" / "config.test.yaml").read_text()))
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
        ("clip.pretrain_with", {"digits": ["digits"]}, "clip.pretrain_with.digits"),  # its own world is no other
        ("clip.pretrain_with", {"shapes": ["shapes", "digits"]}, "clip.pretrain_with.shapes"),
        ("clip.pretrain_with", {"digits": ["imagenet"]}, "clip.pretrain_with.digits.0"),  # embedded worlds only
        ("clip.pretrain_with", {"mnist": ["shapes"]}, "clip.pretrain_with"),
        ("clip.pretrain_with", {"digits": ["shapes", "shapes"]}, "clip.pretrain_with.digits"),
        ("clip.pretrain_with", {"digits": "shapes"}, "clip.pretrain_with.digits"),
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
    bad.write_text((REPO / "config.yaml").read_text().replace("\n  shots: 16", "\n\tshots: 16"))
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


# --- property-based: any value of any key ---------------------------------------------------------

CONFIG = load_config(REPO / "config.yaml")


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


def _with_leaf(path: tuple, value) -> dict:
    """A copy of config.yaml with the leaf at ``path`` set to ``value``."""
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
    _check(_with_leaf(path, value), path)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(KEYS), text=TEXTS)
def test_any_command_line_string_is_refused_in_one_line_or_finite(path, text):
    _check(_with_leaf(path, text), path)


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


# --- the paper suite's config -----------------------------------------------------------------------

PAPER_DATASETS = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                  "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101"]


@pytest.fixture(scope="module")
def paper_config() -> dict:
    load = lambda name: yaml.safe_load((REPO / name).read_text())  # noqa: E731
    return _deep_merge(load("config.yaml"), load("config.paper.yaml"))


def test_paper_config_is_valid_and_complete(paper_config):
    assert validate_config(paper_config) is paper_config
    assert paper_config["datasets"] == PAPER_DATASETS
    assert paper_config["seeds"] == [1, 2, 3]
    assert paper_config["clip"]["pretrained"]["model"] == "ViT-B-16-quickgelu"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda c: c.update(datasets=["shapes"]), "datasets.0"),           # an embedded dataset in the paper suite
        (lambda c: c["clip"].update(pretrained=None), "clip.pretrained"),  # the paper suite needs pretrained CLIP
        (lambda c: c["data"].pop("root"), "data"),
    ],
)
def test_paper_config_errors_name_the_key(paper_config, change, key):
    bad = copy.deepcopy(paper_config)
    change(bad)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(bad)


# --- prompt.checkpoint_every ----------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, "5", 2.5, None])
def test_config_rejects_a_bad_interval_naming_the_key(config, value):
    with pytest.raises(ConfigError) as info:
        validate_config(_with(config, "prompt.checkpoint_every", value))
    assert "'prompt.checkpoint_every'" in str(info.value)


def test_config_interval_is_required_and_zero_allowed(config):
    assert config["prompt"]["checkpoint_every"] >= 0
    validate_config(_with(config, "prompt.checkpoint_every", 0))
    broken = {**config, "prompt": {k: v for k, v in config["prompt"].items() if k != "checkpoint_every"}}
    with pytest.raises(ConfigError, match=r"'prompt'.*'checkpoint_every'"):
        validate_config(broken)


# --- the paper suite's datasets: the registry loaded, not a list in the schema (issue 27) ----------


@pytest.mark.parametrize("name", ["my_birds", "dtd2", "flickr30k", "vqav2", "imagenet_a", "imagenet_v2"])  # unknown, not classification, test-only
def test_a_dataset_the_registry_does_not_define_is_refused_naming_the_valid_ones(paper_config, name):
    bad = copy.deepcopy(paper_config)
    bad["datasets"] = ["dtd", name]
    with pytest.raises(ConfigError) as info:
        validate_config(bad)
    (line,) = str(info.value).splitlines()
    assert line.startswith(f"config: key 'datasets.1' = {name!r}: must be one of imagenet, caltech101,")
    assert "ucf101" in line and "flickr30k, " not in line and line.endswith("registry.yaml)")
    assert "imagenet_" not in line.split("must be one of")[1]  # the test-only targets train nothing


@pytest.mark.parametrize("name", ["../up", "a/b", ".hidden", "", "my birds"])
def test_a_dataset_name_that_is_no_plain_name_is_refused(paper_config, name):
    bad = copy.deepcopy(paper_config)
    bad["datasets"] = [name]
    with pytest.raises(ConfigError, match=r"key 'datasets\.0' = .*: must be a string matching"):
        validate_config(bad)


def test_a_dataset_of_the_users_registry_is_accepted(paper_config, tmp_path, monkeypatch):
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({"version": 1, "datasets": {"my_birds": {"local": True, "image_root": "images"}}}))
    monkeypatch.setenv("DICAP_REGISTRY", str(registry))
    mine = {**copy.deepcopy(paper_config), "datasets": ["my_birds"]}
    assert validate_config(mine) is mine
    with pytest.raises(ConfigError, match=rf"'dtd': must be one of my_birds \(the classification entries of {re.escape(str(registry))}\)"):
        validate_config({**mine, "datasets": ["dtd"]})


@pytest.mark.parametrize(("text", "why"), [(None, "cannot read the dataset registry"), ("datasets: [a\n", "not valid YAML"),
                                           ("version: 1\n", "has no 'datasets' mapping")])
def test_an_unreadable_registry_is_one_line_naming_the_file(paper_config, tmp_path, monkeypatch, text, why):
    registry = tmp_path / "registry.yaml"
    if text is not None:
        registry.write_text(text)
    monkeypatch.setenv("DICAP_REGISTRY", str(registry))
    with pytest.raises(ConfigError) as info:
        validate_config(copy.deepcopy(paper_config))
    (line,) = str(info.value).splitlines()
    assert line.startswith("config: key 'datasets': cannot be checked: " + str(registry)) and why in line


def test_the_embedded_suite_does_not_read_the_registry(config, tmp_path, monkeypatch):
    monkeypatch.setenv("DICAP_REGISTRY", str(tmp_path / "missing.yaml"))
    assert validate_config(config) is config


@pytest.mark.parametrize("given", ["registry.yaml", "sites/ours.yaml", "../up/registry.yaml"])
def test_a_relative_registry_variable_is_the_file_it_named_from_where_it_was_read(tmp_path, monkeypatch, given):
    """A job run in another folder (snakemake --directory) must read the same file as the check."""
    from dicap.config import registry_file

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("DICAP_REGISTRY", given)
    path = registry_file()
    assert path.is_absolute() and path == (work / given).resolve()
    assert registry_file("explicit.yaml") == Path("explicit.yaml")  # an explicit path is the caller's


@pytest.mark.parametrize("entries", [
    {"a": {}, "b": {"task": "retrieval"}, "c": {"task": "classification"}, "d": {"task": "vqa"}},
    {"z": {"local": True}, "y": "not a mapping yet", "x": {"task": "vqa"}},
    {},
])
def test_the_config_and_the_data_layer_agree_on_each_tasks_keys(entries):
    """One filter: an entry naming no task is classification, in file order, for both readers."""
    from dicap.config import registry_keys
    from dicap.data.paper_sources import TASKS, dataset_keys

    tasks = {k: (e.get("task", "classification") if isinstance(e, dict) else "classification") for k, e in entries.items()}
    for task in TASKS:
        assert registry_keys(entries, task) == [k for k, t in tasks.items() if t == task]
        mappings = {k: e for k, e in entries.items() if isinstance(e, dict)}  # what the data layer has checked
        assert dataset_keys({"datasets": mappings}, task) == registry_keys(mappings, task)
    assert registry_keys(entries) == registry_keys(entries, "classification")


def test_the_transfer_targets_are_checked_against_the_registry_where_the_source_is_studied(paper_config):
    ok = copy.deepcopy(paper_config)
    assert validate_config(ok) is ok  # imagenet is studied: its targets are all registry entries
    bad = _with(_with(copy.deepcopy(paper_config), "transfer.domain_generalization", ["imagenet_v2", "imagenet_x"]),
                   "transfer.cross_dataset", ["imagenet_sketch"])
    with pytest.raises(ConfigError) as info:
        validate_config(bad)
    lines = str(info.value).splitlines()
    assert any(line.startswith("config: key 'transfer.domain_generalization.1' = 'imagenet_x': must be one of") for line in lines)
    # ImageNet-Sketch holds ImageNet's classes in another domain: a domain-generalization target, not another dataset
    assert any(line.startswith("config: key 'transfer.cross_dataset.0' = 'imagenet_sketch'") for line in lines)
    assert len(lines) == 2
    elsewhere = {**bad, "datasets": ["dtd"]}  # a study without the source transfers nothing: nothing to check
    assert validate_config(elsewhere) is elsewhere
