"""The reproduction report, the reference file, and the README section written from it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from dicap.code_version import code_version, job_sources
from dicap.report.readme import END, START, results_section, update_readme
from dicap.report.reproduction import (
    ACCURACY, EXACT, RATE, compare, read_reference, record_reference, regenerated_numbers, tolerance,
)

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results" / "reference" / "embedded.csv"


@pytest.fixture
def tables(tmp_path):
    t1 = pd.DataFrame({
        "suite": "embedded", "split": "test_unbiased", "dataset": ["shapes", "shapes"], "method": ["coop", "dicap"],
        "base": [90.0, 91.0], "base_std": [1.0, 1.0], "novel": [80.0, 82.0], "novel_std": [2.0, 2.0],
        "hm": [84.7, 86.3], "hm_std": [0.5, 0.5], "seeds": "1 2",
    })
    backbones = pd.DataFrame({"dataset": ["shapes"], "clip_zero_shot_accuracy": [0.97], "counterfactuals": [240],
                              "inversion_reconstruction_mse": [0.0016]})
    t1.to_csv(tmp_path / "table1.csv", index=False)
    backbones.to_csv(tmp_path / "backbones.csv", index=False)
    (tmp_path / "table1.provenance.json").write_text('{"config_hash": "abc"}')
    return tmp_path


def test_every_number_is_compared_and_stds_are_not(tables):
    numbers = regenerated_numbers(tables / "table1.csv", tables / "backbones.csv")
    assert len(numbers) == 2 * 3 + 3  # base/novel/hm per method, three backbone numbers
    assert not numbers["metric"].str.endswith("_std").any()


@pytest.mark.parametrize(("shift", "inside"), [(0.0, True), (5.9, True), (-5.9, True), (6.1, False), (-20.0, False)])
def test_accuracy_outside_tolerance_is_flagged(tables, shift, inside):
    numbers = regenerated_numbers(tables / "table1.csv", tables / "backbones.csv")
    reference = numbers.copy()
    record_reference(reference, tables / "reference.csv", tables / "table1.provenance.json")
    ref, machine = read_reference(tables / "reference.csv")
    assert machine["config_hash"] == "abc" and machine["cpu"]
    moved = numbers.copy()
    moved.loc[moved["metric"] == "hm", "value"] += shift
    result = compare(moved, ref)
    hm = result[result["metric"] == "hm"]
    assert (hm["within"] == ("yes" if inside else "NO")).all()
    assert (result[result["metric"] != "hm"]["within"] == "yes").all()


def test_without_a_reference_nothing_claims_to_match(tables):
    result = compare(regenerated_numbers(tables / "table1.csv"), None)
    assert (result["within"] == "no reference").all()


def test_tolerance_families():
    assert tolerance("hm") is ACCURACY and tolerance("valid") is RATE and tolerance("counterfactuals") is EXACT
    assert tolerance("inversion_reconstruction_mse").bound(0.002) == pytest.approx(0.001)
    # Tables 2 and 3 are percentages; the backbones' and the audit's accuracies are shares of 1
    for metric in ("i2t_r1", "novel_i2t_r10", "t2i_r5", "vqa_accuracy", "top1", "colour_accuracy"):
        assert tolerance(metric, "table2" if "_r" in metric else "table3") is ACCURACY
    assert tolerance("clip_zero_shot_accuracy", "backbones") is RATE
    assert tolerance("oracle_heldout_class_accuracy", "counterfactual_audit") is RATE


def test_a_file_without_the_columns_is_not_a_reference(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="x.csv is not a reference file"):
        read_reference(tmp_path / "x.csv")


def test_readme_results_section_is_the_reference():
    """The README's numbers are written from results/reference/embedded.csv, never typed."""
    assert update_readme(REPO / "README.md", results_section(REFERENCE), check=True), (
        "README.md's results section is stale: run "
        "`dicap readme_results --reference results/reference/embedded.csv --readme README.md`")


def test_readme_rewrite_replaces_only_the_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold numbers\n{END}\noutro\n")
    update_readme(readme, results_section(REFERENCE))
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "old numbers" not in text
    assert "| shapes | coop |" in text


def test_code_version_follows_the_imports_of_each_command():
    """A loss edit reaches prompt training, not the data or counterfactual jobs."""
    losses = REPO / "src" / "dicap" / "prompting" / "losses.py"
    assert losses in job_sources("train_prompt").files
    for job in ("prepare_dataset", "make_split", "clip_backbone", "diffusion_backbone", "counterfactual_shard",
                "merge_counterfactuals", "encode_train_features", "encode_eval_features", "evaluate"):
        assert losses not in job_sources(job).files, job
    assert REPO / "src" / "dicap" / "data" / "registry.yaml" in job_sources("download_dataset").files
    assert len({code_version(c) for c in ("train_prompt", "evaluate", "table1")}) == 3
    with pytest.raises(KeyError, match="no dicap job named 'nope'"):
        code_version("nope")


def test_code_version_hashes_only_the_jobs_own_part_of_its_file():
    """Two jobs of one jobs.py: each hashes its function and the helpers it uses, not the other job."""
    encode = job_sources("encode_eval_features")
    assert encode.module == job_sources("train_prompt").module
    assert not any("def train_prompt" in text for text in encode.texts)
    assert any(text.startswith("def epochs") for text in job_sources("train_prompt").texts)  # a helper it names
    assert any(text.startswith("def _ablation") for text in job_sources("ablation_sampling").texts)


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
