"""Which run an invocation is and where it writes (src/dicap/runs.py): the main run at the root,
every other run inside runs/<name>/, and a run name that can never leave that folder."""

from __future__ import annotations

import json
import random
import string

import pytest

from dicap import runs
from dicap.config import ConfigError, validate_config, with_defaults

CONFIG = {"suite": "embedded", "seeds": [1, 2, 3], "run": "", "downloads": "controller", "data": {"shots": 16}}


def test_the_config_files_as_they_are_are_the_main_run():
    assert runs.run_name(CONFIG, {}) == runs.MAIN
    assert runs.run_folder("/repo", runs.MAIN) is None


@pytest.mark.parametrize("key", runs.NOT_EXPERIMENT)
def test_an_override_that_changes_no_output_stays_the_main_run(key):
    assert runs.run_name(CONFIG, {key: ""} if key == "run" else {key: "x"}) == runs.MAIN  # --config run='' names no run


def test_an_unnamed_override_runs_in_a_folder_named_by_its_config():
    one = {**CONFIG, "seeds": [1]}
    name = runs.run_name(one, {"seeds": "[1]"})
    assert name.startswith(runs.AUTO_PREFIX) and runs.NAME.fullmatch(name)
    assert runs.run_name(dict(one), {"seeds": "[1]"}) == name, "the same overrides must find the same folder"
    assert runs.run_name({**one, "downloads": "cluster"}, {"seeds": "[1]"}) == name, "downloads changes no output"
    assert runs.run_name({**CONFIG, "seeds": [2]}, {"seeds": "[2]"}) != name


def test_a_named_run_keeps_its_name_whatever_the_overrides():
    assert runs.run_name({**CONFIG, "run": "my-test_1.0"}, {"seeds": "[1]", "run": "my-test_1.0"}) == "my-test_1.0"
    assert runs.run_folder("/repo", "my-test_1.0") == runs.Path("/repo/runs/my-test_1.0")


def test_the_run_folder_is_absolute_so_a_cluster_job_does_not_nest_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runs.run_folder(".", "a").is_absolute() and runs.run_folder(".", "a") == tmp_path / "runs" / "a"


def _random_names(n: int) -> list[str]:
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits + "._-/\\ ~$:*?\0\n" + "é"
    names = ["paper", "seeds1", "a.b_c-d", "..", ".", "../x", "a/b", "/abs", "-x", ".hidden", "x" * 65, "a\nb", "runs/../../etc", "~user", "a b"]
    return names + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 70))) for _ in range(n)]


@pytest.mark.parametrize("name", _random_names(300))
def test_a_run_name_is_refused_where_it_enters_or_stays_inside_runs(name, tmp_path):
    """Property: the schema refuses a name with one line naming the key, or the name is a plain
    folder directly inside runs/ (no separator, no parent, not hidden), and runs.py agrees."""
    config = with_defaults({**CONFIG, "run": name})
    try:
        validate_config(config, "config")
    except ConfigError as err:
        assert "'run'" in str(err) and "\n" not in str(err).strip()
        with pytest.raises(ValueError, match="run"):
            runs.run_name(config, {})
        return
    folder = runs.run_folder(tmp_path, runs.run_name(config, {}))
    assert folder.parent == tmp_path / "runs" and folder.name == name
    assert not name.startswith(".") and "/" not in name and "\\" not in name


def test_results_of_the_other_suite_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runs.foreign_results("paper") is None, "no results/: nothing to collide with"
    (tmp_path / "results").mkdir()
    record = tmp_path / runs.RESULTS_RECORD
    record.write_text(json.dumps({"params": {"suite": "embedded"}}))
    assert runs.foreign_results("paper") == "embedded"
    assert runs.foreign_results("embedded") is None
    record.write_text("{not json")
    assert runs.foreign_results("paper") is None, "an unreadable record is the table job's to rewrite"


def test_the_experiment_hash_ignores_only_the_keys_that_change_no_output():
    base = runs.experiment_hash(CONFIG)
    assert runs.experiment_hash({**CONFIG, "run": "x", "downloads": "cluster"}) == base
    assert runs.experiment_hash({**CONFIG, "data": {"shots": 8}}) != base


def test_paths_the_user_gave_keep_meaning_where_they_started(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {"data": {"root": "data/paper"}}
    environ = {"DICAP_REGISTRY": "my/registry.yaml"}
    runs.anchor_user_paths(config, environ)
    assert config["data"]["root"] == str(tmp_path / "data" / "paper")
    assert environ["DICAP_REGISTRY"] == str(tmp_path / "my" / "registry.yaml")
    untouched = {"data": {"root": "/abs/data"}}
    runs.anchor_user_paths(untouched, {})
    assert untouched == {"data": {"root": "/abs/data"}}
