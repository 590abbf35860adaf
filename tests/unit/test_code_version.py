"""Code versions (code_version.py): each job module's hash follows its imports; versions saved on
disk are used under the same source stamp only."""

from __future__ import annotations

import json
import os

import pytest

from dicap.code_version import code_version, job_sources
from helpers import REPO


def test_code_version_follows_the_imports_of_each_command():
    """A loss edit reaches prompt training, not the data or counterfactual jobs."""
    losses = REPO / "src" / "dicap" / "prompting" / "losses.py"
    assert losses in job_sources("train_prompt").files
    for learner in ("cocoop", "kgcoop", "maple", "cpl"):  # loaded by the registry from "module:Class" strings
        assert REPO / "src" / "dicap" / "prompting" / f"{learner}.py" in job_sources("train_prompt").files, learner
    for job in ("prepare_dataset", "make_split", "clip_backbone", "diffusion_backbone", "counterfactual_shard",
                "merge_counterfactuals", "encode_train_features", "encode_eval_features", "evaluate"):
        assert losses not in job_sources(job).files, job
    assert REPO / "src" / "dicap" / "data" / "registry.yaml" in job_sources("download_dataset").files
    assert len({code_version(c) for c in ("train_prompt", "evaluate", "table1")}) == 3
    with pytest.raises(KeyError, match="no dicap job named 'nope'"):
        code_version("nope")


def test_code_version_is_one_per_job_module():
    """The unit is a rule file's job module: its jobs share one hash, other modules differ."""
    from dicap.code_version import JOBS, ROOT

    assert job_sources("train_prompt").module == ROOT / JOBS / "prompts.py"
    assert code_version("audit_counterfactuals") == code_version("audit_summary") == code_version("oracle")
    assert code_version("ablation_sampling") == code_version("ablation_loss") != code_version("table1")
    assert code_version("encode_train_features") != code_version("train_prompt")  # rules/features.smk, rules/prompts.smk


def test_code_versions_saved_on_disk_are_used_only_under_the_same_source_stamp(tmp_path, monkeypatch):
    """The no-op rerun reads the hashes from __pycache__; an edit anywhere in the package (a new
    stamp) must make them be computed again, and what is saved equals what is computed."""
    from dicap import code_version as cv

    monkeypatch.setattr(cv, "CACHE", tmp_path / "code_versions.json")
    cv._cached_versions.cache_clear()
    cv.code_version.cache_clear()
    try:
        fresh = {job: cv.code_version(job) for job in ("train_prompt", "evaluate")}
        assert fresh == {job: cv._hash_sources(job) for job in fresh}
        saved = json.loads(cv.CACHE.read_text())
        assert saved["stamp"] == cv.source_stamp() and saved["versions"] == fresh
        for stamp, expected in ((saved["stamp"], "from the cache"), ("an older package", fresh["train_prompt"])):
            cv.CACHE.write_text(json.dumps({"stamp": stamp, "versions": {"train_prompt": "from the cache"}}))
            cv._cached_versions.cache_clear()
            cv.code_version.cache_clear()
            assert cv.code_version("train_prompt") == expected, stamp
        cv.CACHE.write_text("not json")
        cv._cached_versions.cache_clear()
        cv.code_version.cache_clear()
        assert cv.code_version("evaluate") == fresh["evaluate"]
    finally:
        cv._cached_versions.cache_clear()
        cv.code_version.cache_clear()


def test_the_source_stamp_changes_with_any_edit(tmp_path, monkeypatch):
    from dicap import code_version as cv

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.py").write_text("x = 1\n")
    (tmp_path / "registry.yaml").write_text("k: v\n")
    (tmp_path / "__pycache__").mkdir()
    monkeypatch.setattr(cv, "ROOT", tmp_path)
    stamps = [cv.source_stamp()]
    (tmp_path / "__pycache__" / "code_versions.json").write_text("{}")  # its own cache does not count
    assert cv.source_stamp() == stamps[0]
    for edit in (lambda: (tmp_path / "a" / "x.py").write_text("x = 22\n"),
                 lambda: (tmp_path / "registry.yaml").write_text("k: w\n"),
                 lambda: (tmp_path / "a" / "y.py").write_text(""),
                 lambda: os.utime(tmp_path / "a" / "y.py", ns=(1, 1))):
        edit()
        stamps.append(cv.source_stamp())
    assert len(set(stamps)) == len(stamps)


SCHEMA = """# a comment
type: object
description: the config
properties:
  description: {type: string, description: a key that happens to be named so}
  steps: {type: integer, default: 600, description: how long, examples: [600]}
$defs:
  title: {type: number, title: a definition named title}
"""


@pytest.mark.parametrize("edit,moves", [
    (lambda s: s.replace("# a comment", "# another comment"), False),
    (lambda s: s.replace("description: how long", "description: how long (reworded)"), False),
    (lambda s: s.replace("description: the config", "description: the config, reworded"), False),
    (lambda s: s.replace("examples: [600]", "examples: [1500]"), False),
    (lambda s: s.replace("title: a definition", "title: another definition"), False),
    (lambda s: s.replace("default: 600", "default: 1500"), True),
    (lambda s: s.replace("steps: {type: integer", "steps: {type: number"), True),
    (lambda s: s.replace("  description: {type: string", "  descriptions: {type: string"), True),  # a property's name
    (lambda s: s.replace("  title: {type: number", "  titles: {type: number"), True),  # a definition's name
    (lambda s: s + "required: [steps]\n", True),
])
def test_a_schemas_annotations_and_comments_do_not_move_a_job_hash(tmp_path, edit, moves):
    """Rewording a schema's descriptions, titles, examples or comments reruns nothing; a change
    to what validates, a default, or a property that is named like an annotation does."""
    from dicap.code_version import source_bytes

    path = tmp_path / "config.schema.yaml"
    path.write_text(SCHEMA)
    before = source_bytes(path)
    path.write_text(edit(SCHEMA))
    assert (source_bytes(path) != before) == moves
    other = tmp_path / "registry.yaml"  # any other data file: every byte counts
    other.write_text("# a comment\nk: v\n")
    first = source_bytes(other)
    other.write_text("# another comment\nk: v\n")
    assert source_bytes(other) != first
