"""The reproduction report (report/reproduction.py): every number compared with the reference
within its tolerance, and the reference file itself."""

from __future__ import annotations

import pandas as pd
import pytest

from dicap.report.reproduction import (
    ACCURACY,
    EXACT,
    RATE,
    compare,
    read_reference,
    record_reference,
    regenerated_numbers,
    tolerance,
)


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
