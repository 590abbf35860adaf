"""The reproduction report (report/reproduction.py): every number compared with the reference
within a tolerance sized by its seed spread (or a fixed bound), the machine record, the verdict,
and the reference file itself."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from cpuinfo_texts import SAPPHIRE_RAPIDS, ZEN3, ZEN5
from dicap.cpu import KERNEL_PINS, cpu_from_cpuinfo
from dicap.report import reproduction
from dicap.report.reproduction import (
    ACCURACY,
    ACCURACY_FLOOR,
    CPU_SE,
    EXACT,
    KEY,
    RATE,
    SEED_K,
    compare,
    describe_cpu,
    describe_machine,
    read_reference,
    record_reference,
    regenerated_numbers,
    same_cpu,
    to_markdown,
    tolerance,
    verdict,
)


def test_the_cpu_is_described_precisely_and_an_old_record_as_it_was():
    assert describe_cpu(cpu_from_cpuinfo(ZEN3)) == (
        "AMD EPYC (AuthenticAMD family 25 model 1; avx2 fma; no avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_bf16)")
    record = json.loads(json.dumps({"cpu": cpu_from_cpuinfo(ZEN3)}, sort_keys=True))  # as written to and read from JSON
    assert describe_cpu(record["cpu"]) == describe_cpu(cpu_from_cpuinfo(ZEN3))
    old = {"cpu": "AMD EPYC", "cores": 2, "versions": {"torch": "2.14.1"}, "recorded": "2026-11-30"}
    assert describe_machine(old) == "AMD EPYC, 2 cores, torch 2.14.1, 2026-11-30"  # results/reference/embedded.md


@pytest.mark.parametrize(("other", "same"), [
    (ZEN3, True),
    (ZEN3.replace("model\t\t: 1", "model\t\t: 17"), False),  # Zen 4
    (ZEN3.replace("AuthenticAMD", "HygonGenuine", 1), False),
    (ZEN3.replace(" avx2", "", 1), False),  # a hypervisor that hides AVX2
    (ZEN3.replace("AMD EPYC", "AMD EPYC 7B13", 1), True),  # the name alone changes no kernel
    (SAPPHIRE_RAPIDS, False),
])
def test_same_cpu_is_vendor_family_model_and_flags(other, same):
    assert same_cpu({"cpu": cpu_from_cpuinfo(ZEN3)}, {"cpu": cpu_from_cpuinfo(other)}) is same
    assert same_cpu({"cpu": "AMD EPYC"}, {"cpu": cpu_from_cpuinfo(other)}) is None  # a record from before


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


def test_every_number_is_compared_with_its_seed_spread_beside_it(tables):
    numbers = regenerated_numbers(tables / "table1.csv", tables / "backbones.csv")
    assert len(numbers) == 2 * 3 + 3  # base/novel/hm per method, three backbone numbers
    assert not numbers["metric"].str.endswith("_std").any() and "seeds" not in set(numbers["metric"])
    t1 = numbers[numbers["table"] == "table1"].set_index(["method", "metric"])
    assert t1.loc[("coop", "novel"), "std"] == 2.0 and (t1["n"] == 2).all()
    assert numbers.loc[numbers["table"] == "backbones", ["std", "n"]].isna().all().all()  # no per-seed values


def test_a_transfer_table_is_keyed_by_domain_and_its_positive_control_by_variant(tables):
    """results/domain_generalization.csv: each (domain, dataset, run) one number with its seed
    spread; main's dicap and the true-counterfactual one never share a key."""
    rows = [{"dataset": "digits", "variant": v, "method": m, "domain": d, "accuracy": 50.0 + i, "accuracy_std": 1.0,
             "accuracy_se": 0.58, "n": 3, "seeds": "1 2 3"}
            for i, (v, m) in enumerate([("main", "coop"), ("main", "dicap"), ("true_cf", "dicap")]) for d in ("style", "average")]
    pd.DataFrame(rows).to_csv(tables / "dg.csv", index=False)
    paired = [{"dataset": "digits", "domain": "style", "variant": v, "method": "dicap", "baseline_variant": "main",
               "baseline": "coop", "metric": "accuracy", "n": 3, "delta": d, "se": 0.5, "ci_low": 0.0, "ci_high": 1.0,
               "verdict": "within noise", "delta_std": 0.866} for v, d in (("main", 1.0), ("true_cf", 2.0))]
    pd.DataFrame(paired).to_csv(tables / "dg_paired.csv", index=False)  # the job writes it beside the table
    numbers = regenerated_numbers(tables / "table1.csv", transfer={"domain_generalization": tables / "dg.csv"})
    dg = numbers[numbers["table"] == "domain_generalization"]
    assert len(dg) == 6 and not dg.duplicated(subset=KEY).any() and set(dg["metric"]) == {"accuracy"}
    assert set(dg["method"]) == {"coop", "dicap", "dicap (true_cf)"} and set(dg["split"]) == {"style", "average"}
    assert (dg["std"] == 1.0).all() and (dg["n"] == 3).all() and tolerance("accuracy", "domain_generalization") is ACCURACY
    deltas = numbers[numbers["table"] == "domain_generalization_paired"].set_index("method")
    assert list(deltas.index) == ["dicap − coop", "dicap (true_cf) − coop"] and set(deltas["metric"]) == {"delta"}
    assert deltas.loc["dicap (true_cf) − coop", "value"] == 2.0 and (deltas["std"] == 0.866).all() and (deltas["n"] == 3).all()


def test_one_seed_is_no_number(tables):
    t1 = pd.read_csv(tables / "table1.csv").assign(seeds=1)  # read back as an integer column
    t1.to_csv(tables / "table1.csv", index=False)
    numbers = regenerated_numbers(tables / "table1.csv")
    assert set(numbers["metric"]) == {"base", "novel", "hm"} and (numbers["n"] == 1).all()
    assert (compare(numbers, numbers)["rule"] == "fixed").all()  # one seed has no spread


def test_the_reference_records_each_numbers_spread_and_machine(tables):
    numbers = regenerated_numbers(tables / "table1.csv", tables / "backbones.csv")
    record_reference(numbers, tables / "reference.csv", tables / "table1.provenance.json")
    assert (tables / "reference.csv").read_text().splitlines()[:2] == [
        "table,split,dataset,method,metric,value,std,n", "table1,test_unbiased,shapes,coop,base,90.0,1.0,2"]
    ref, machine = read_reference(tables / "reference.csv")
    assert machine["config_hash"] == "abc" and {"vendor", "family", "model", "model_name", "simd"} <= set(machine["cpu"])
    assert set(machine["kernels"]) == set(KERNEL_PINS)  # the kernel variables in effect, unset ones as null
    assert ref["n"].tolist()[:6] == [2] * 6 and ref["n"].isna().sum() == 3


@pytest.mark.parametrize("std", [0.5, 1.0, 2.5])
@pytest.mark.parametrize("n", [2, 3, 5])
def test_a_mean_may_move_by_k_seed_standard_errors_plus_the_floor(tables, std, n):
    t1 = pd.read_csv(tables / "table1.csv").assign(hm_std=std, seeds=" ".join(map(str, range(1, n + 1))))
    t1.to_csv(tables / "table1.csv", index=False)
    numbers = regenerated_numbers(tables / "table1.csv", tables / "backbones.csv")
    bound = SEED_K * math.sqrt(2 * std**2 / n) + ACCURACY_FLOOR
    for shift, within in ((0.0, "yes"), (0.99 * bound, "yes"), (-0.99 * bound, "yes"), (1.01 * bound, "NO"), (-20.0, "NO")):
        moved = numbers.copy()
        moved.loc[moved["metric"] == "hm", "value"] += shift
        result = compare(moved, numbers)
        hm = result[result["metric"] == "hm"]
        assert (hm["within"] == within).all() and (hm["rule"] == "seeds").all(), (shift, hm)
        assert hm["tolerance"].tolist() == pytest.approx([bound] * 2, abs=1e-4)
        assert (result[result["metric"] != "hm"]["within"] == "yes").all()


def test_the_seed_bound_in_numbers():
    """Three seed standard errors plus half a point: std 1 over 3 seeds on both sides is 3 x 0.816 + 0.5."""
    reference = pd.DataFrame([{"table": "table1", "split": "s", "dataset": "d", "method": "m", "metric": "hm",
                               "value": 60.0, "std": 1.0, "n": 3}])
    result = compare(reference.assign(value=62.9), reference).iloc[0]
    assert (result["se"], result["tolerance"], result["distance"]) == pytest.approx((0.8165, 2.9495, 3.5517), abs=2e-4)
    assert result["within"] == "yes" and compare(reference.assign(value=63.0), reference).iloc[0]["within"] == "NO"


def test_numbers_without_a_seed_spread_keep_their_fixed_bound(tables):
    numbers = regenerated_numbers(tables / "table1.csv", tables / "backbones.csv")
    numbers.loc[numbers["metric"] == "base", "std"] = 0.0  # every seed gave the same number: no spread to scale by
    result = compare(numbers, numbers).set_index(["method", "metric"])
    assert set(result.loc[(slice(None), "base"), "rule"]) == {"fixed"}
    assert result.loc[("coop", "base"), "tolerance"] == ACCURACY.absolute
    assert result.loc[("", "counterfactuals"), "tolerance"] == 0 and result.loc[("", "counterfactuals"), "rule"] == "fixed"


def test_an_old_reference_falls_back_to_the_fixed_bounds_and_says_so(tables):
    numbers = regenerated_numbers(tables / "table1.csv", tables / "backbones.csv")
    numbers[[*KEY, "value"]].to_csv(tables / "old.csv", index=False)  # recorded before std and n
    old, _ = read_reference(tables / "old.csv")
    moved = numbers.assign(value=numbers["value"] + (numbers["metric"] == "hm") * 5.9)
    result = compare(moved, old)
    assert (result["rule"] == "fixed").all() and (result["within"] == "yes").all()
    assert "The reference records no seed spread" in to_markdown(result, {"cpu": "AMD EPYC"}, {"cpu": cpu_from_cpuinfo(ZEN3)})
    assert "records no seed spread" not in to_markdown(compare(moved, numbers), None, {"cpu": cpu_from_cpuinfo(ZEN3)})


def test_without_a_reference_nothing_claims_to_match(tables):
    result = compare(regenerated_numbers(tables / "table1.csv"), None)
    assert (result["within"] == "no reference").all()
    assert verdict(result, None, {"cpu": cpu_from_cpuinfo(ZEN3)})[-1] == "No reference to compare with: nothing here is judged."


def test_tolerance_families():
    assert tolerance("hm") is ACCURACY and tolerance("valid") is RATE and tolerance("counterfactuals") is EXACT
    assert tolerance("inversion_reconstruction_mse").bound(0.002) == pytest.approx(0.001)
    assert tolerance("inversion_reconstruction_mse").floor is None and EXACT.floor is None  # never scaled by seeds
    # Tables 2 and 3 are percentages; the backbones' and the audit's accuracies are shares of 1
    for metric in ("i2t_r1", "novel_i2t_r10", "t2i_r5", "vqa_accuracy", "top1", "colour_accuracy"):
        assert tolerance(metric, "table2" if "_r" in metric else "table3") is ACCURACY
    assert tolerance("clip_zero_shot_accuracy", "backbones") is RATE
    assert tolerance("oracle_heldout_class_accuracy", "counterfactual_audit") is RATE


def test_a_file_without_the_columns_is_not_a_reference(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="x.csv is not a reference file"):
        read_reference(tmp_path / "x.csv")


# --- the verdict: three cases, from the rows --------------------------------------------------

STD, N = 3.0, 3
SE = math.sqrt(2 * STD**2 / N)  # the seed standard error of a difference of two 3-seed means
ZEN3_RUN, ZEN3_REF, XEON = ({"cpu": cpu_from_cpuinfo(t)} for t in (ZEN3, ZEN3, SAPPHIRE_RAPIDS))


def _judged(distances: list[float], fixed_shift: float = 0.0) -> pd.DataFrame:
    """Accuracy means (std 3 over 3 seeds) moved by ``distances`` seed standard errors, and one count."""
    rows = [{"table": "table1", "split": "test_unbiased", "dataset": "digits", "method": f"m{i}", "metric": "hm",
             "value": 60.0, "std": STD, "n": N} for i in range(len(distances) + 2)]
    rows.append({"table": "backbones", "split": "", "dataset": "digits", "method": "", "metric": "counterfactuals",
                 "value": 240.0, "std": float("nan"), "n": float("nan")})
    reference = pd.DataFrame(rows)
    run = reference.copy()
    run.loc[: len(distances) - 1, "value"] += [d * SE for d in distances]
    run.loc[len(run) - 1, "value"] += fixed_shift
    return compare(run, reference)


@pytest.mark.parametrize("distances", [[3.5], [4.5, -3.4], [4.9, 0.5]])
def test_on_the_same_cpu_anything_outside_is_a_change(distances):
    lines = verdict(_judged(distances), ZEN3_REF, ZEN3_RUN)
    outside = sum(abs(d) * SE > SEED_K * SE + ACCURACY_FLOOR for d in distances)
    assert lines[2] == f"{len(distances) + 3} numbers compared, {outside} outside their tolerance."
    assert lines[-1].startswith("**Unexpected: a code or data change, not hardware**")
    assert f"{abs(distances[0]):.1f} seed standard errors" in "\n".join(lines)


@pytest.mark.parametrize("distances", [[3.5], [4.5, -3.4], [4.9, 0.5], [-CPU_SE + 0.01]])
def test_on_another_cpu_a_few_standard_errors_are_expected(distances):
    lines = verdict(_judged(distances), ZEN3_REF, XEON)
    assert lines[-1].startswith("**Expected on a different CPU** (reference on AMD EPYC (AuthenticAMD family 25 model 1;")
    assert "this run on Intel(R) Xeon(R) Platinum 8480+ (GenuineIntel family 6 model 143;" in lines[-1]


@pytest.mark.parametrize(("distances", "fixed_shift", "beyond"),
                         [([5.5], 0.0, 1), ([8.0, 4.0], 0.0, 1), ([30.0, -6.0, 4.0], 0.0, 2), ([4.0], 1.0, 1)])
def test_beyond_five_standard_errors_or_a_fixed_bound_is_more_than_a_cpu(distances, fixed_shift, beyond):
    frame = _judged(distances, fixed_shift)
    lines = verdict(frame, ZEN3_REF, XEON)
    outside = int((frame["within"] == "NO").sum())
    assert lines[-1].startswith(f"**Larger than CPU differences explain** (reference on AMD EPYC")
    assert f": {beyond} of the {outside} numbers outside are beyond 5 seed standard errors" in lines[-1]
    if fixed_shift:
        assert "- `backbones digits counterfactuals`: 241 against 240 (difference +1), outside its fixed bound of 0 (no seed spread to size it by)" in lines


@pytest.mark.parametrize("other", [ZEN5, SAPPHIRE_RAPIDS])
def test_the_verdict_says_when_both_cpus_ran_pinned_kernels_and_still_judges_them_as_two(other):
    """Pinned to AVX2 (dicap.cpu) a Zen 5 rebuilt every artifact of a Zen 3 byte for byte, yet 179
    numbers still moved a little (MaPLe's): two pinned CPUs are still two CPUs."""
    ref, run = ({"cpu": cpu_from_cpuinfo(t), "kernels": dict(KERNEL_PINS)} for t in (ZEN3, other))
    lines = verdict(_judged([3.5]), ref, run)
    assert lines[-1].startswith("**Expected on a different CPU** (reference on AMD EPYC (")
    assert "; both with torch's CPU kernels pinned to AVX2): every number outside" in lines[-1]
    clean = verdict(_judged([1.0]), ref, run)
    assert clean[-1].startswith("**Reproduced**") and clean[-1].endswith("; both with torch's CPU kernels pinned to AVX2).")
    for unset in ({"kernels": dict.fromkeys(KERNEL_PINS)}, {"kernels": None}):  # either side unpinned
        assert "pinned" not in verdict(_judged([3.5]), ref, run | unset)[-1]
        assert "pinned" not in verdict(_judged([1.0]), ref | unset, run)[-1]
    assert "pinned" not in verdict(_judged([3.5]), ref, ref)[-1]  # the same CPU: said so, nothing more
    assert describe_machine(run | {"cores": 2}).endswith(" cores, torch ? (CPU kernels pinned to AVX2)")


def test_a_reference_that_names_no_cpu_is_taken_as_another_and_a_clean_run_is_reproduced():
    lines = verdict(_judged([4.0]), {"cpu": "AMD EPYC"}, ZEN3_RUN)
    assert any("does not name its CPU precisely" in line for line in lines)
    assert lines[-1].startswith("**Expected on a different CPU** (reference on AMD EPYC; this run on AMD EPYC (")
    clean = verdict(_judged([1.0, -2.0]), ZEN3_REF, ZEN3_RUN)
    assert clean[-1].startswith("**Reproduced**: every number is within its tolerance (this run on the reference's CPU")


def test_the_report_ends_with_the_verdict(tables):
    text = to_markdown(_judged([5.5]), ZEN3_REF, XEON)
    assert text.rstrip().splitlines()[-1].startswith("**Larger than CPU differences explain**")
    assert "## Verdict" in text and "This run: Intel(R) Xeon(R) Platinum 8480+ (GenuineIntel family 6 model 143" in text


@pytest.mark.parametrize("damaged", ["table1", "backbones", "audit", "shortcut", "table2"])
def test_a_truncated_table_names_itself(tmp_path, damaged):
    """The regenerated tables are read through dicap.io: a damaged one names its file."""
    from helpers import assert_corrupt, truncated_table

    paths = {name: tmp_path / f"{name}.csv" for name in ("table1", "backbones", "audit", "shortcut", "table2")}
    for path in paths.values():
        pd.DataFrame({"split": ["test"], "dataset": ["shapes"], "method": ["coop"], "variant": ["main"], "hm": [1.0]}).to_csv(path, index=False)
    truncated_table(paths[damaged])
    assert_corrupt(paths[damaged], regenerated_numbers, paths["table1"], paths["backbones"], paths["audit"], paths["shortcut"],
                   {"table2": paths["table2"]})
