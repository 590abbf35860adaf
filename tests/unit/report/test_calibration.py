"""The calibration report (report/calibration.py): each check against its bar, paired by seed, skipped
when its methods are not in the run, the linear probe read where measured, Kendall's tau, and the
report's sentences computed from the numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dicap.report.calibration import (
    FAIL, PASS, REAL, SKIPPED, UNMEASURED, build_calibration, kendall_tau, real, to_markdown, write_calibration,
)

# method -> (base, novel) on test_unbiased, (aligned, conflict) on the paired splits; ranked by HM as
# the real benchmark: maple > kgcoop > cocoop > zeroshot > coop
CALIBRATED = {
    "zeroshot": ((70.0, 75.0), (80.0, 79.0)),
    "coop": ((80.0, 65.0), (90.0, 75.0)),
    "cocoop": ((78.0, 72.0), (85.0, 80.0)),
    "kgcoop": ((79.0, 74.0), (84.0, 81.0)),
    "maple": ((81.0, 75.5), (88.0, 77.0)),
    "dicap": ((79.0, 66.0), (89.0, 76.0)),
    "dicap_kgcoop": ((79.5, 74.0), (84.0, 82.0)),
}
UNBIASED_COOP = ((71.0, 74.0), (79.0, 78.0))  # the negative control: zero-shot's gap on average
SEEDS = (1, 2, 3)


def _hm(b: float, n: float) -> float:
    return 2 * b * n / (b + n)


def _write(root, dataset: str, methods: dict, variant: str = "main", shift: int = 0) -> list:
    paths = []
    for seed in SEEDS:
        rows = []
        for k, (method, ((base, novel), (aligned, conflict))) in enumerate(methods.items()):
            jitter = (seed - 2) * 0.2 * ((k + shift) % 3 + 1)  # per method and seed: the pairs have a spread
            b, n = base + jitter, novel - jitter
            rows += [
                {"method": method, "seed": seed, "split": "test_unbiased", "base": b, "novel": n, "hm": _hm(b, n),
                 "base_worst": b - 10, "novel_worst": n - 10},
                {"method": method, "seed": seed, "split": "test_aligned", "base": aligned + jitter, "novel": n, "hm": 0.0,
                 "base_worst": aligned - 10, "novel_worst": 0.0},
                {"method": method, "seed": seed, "split": "test_conflict", "base": conflict - jitter, "novel": n, "hm": 0.0,
                 "base_worst": conflict - 10, "novel_worst": 0.0},
            ]
        path = root / "metrics" / dataset / variant / f"seed{seed}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(path, index=False)
        paths.append(path)
    return paths


def _files(root, main=CALIBRATED, control=True):
    files = _write(root, "shapes", main) + _write(root, "digits", main)
    return files + (_write(root, "digits", {"coop": UNBIASED_COOP}, "unbiased_shots", shift=1) if control else [])


def _verdicts(checks: pd.DataFrame, dataset: str) -> dict[str, str]:
    return dict(checks.loc[checks["dataset"] == dataset, ["check", "verdict"]].itertuples(index=False))


def test_a_calibrated_run_passes_every_check_it_can_judge(tmp_path):
    backbones = tmp_path / "backbones.csv"
    pd.DataFrame({"dataset": ["shapes", "digits"], "linear_probe": [np.nan, 0.95]}).to_csv(backbones, index=False)
    checks, dicap = build_calibration(_files(tmp_path), ["shapes", "digits"], backbones)
    digits, shapes = _verdicts(checks, "digits"), _verdicts(checks, "shapes")
    assert set(digits.values()) == {PASS}, digits
    assert shapes["negative_control"] == SKIPPED and shapes["linear_probe"] == UNMEASURED
    assert {v for k, v in shapes.items() if k not in ("negative_control", "linear_probe")} == {PASS}
    row = checks[(checks["dataset"] == "digits") & (checks["check"] == "coop_base_gain")].iloc[0]
    assert row["value"] == pytest.approx(10.0) and row["n"] == 3 and row["std"] > 0
    assert row["real"] == pytest.approx(REAL["coop"][0] - REAL["zeroshot"][0])
    tau = checks[(checks["dataset"] == "digits") & (checks["check"] == "hm_ranking")].iloc[0]
    assert tau["value"] == pytest.approx(1.0)
    probe = checks[(checks["dataset"] == "digits") & (checks["check"] == "linear_probe")].iloc[0]
    assert probe["value"] == pytest.approx(95.0)  # a fraction, as the CLIP report's accuracies, read as %
    # DiCap on HM, each against its own learner
    assert set(zip(dicap["method"], dicap["baseline"])) == {("dicap", "coop"), ("dicap_kgcoop", "kgcoop")}
    assert dicap["dataset"].tolist()[:2] == ["shapes", "shapes"]


def test_a_run_off_the_benchmark_fails_the_checks_it_breaks(tmp_path):
    broken = {**CALIBRATED, "coop": ((72.0, 76.0), (84.0, 80.0)),  # base +2 only, novel up, gap 4
              "cocoop": ((70.0, 70.0), (85.0, 80.0))}  # below CoOp's HM
    drifting = ((71.0, 74.0), (90.0, 70.0))  # CoOp on unbiased shots with a gap of 20
    files = _write(tmp_path, "digits", broken) + _write(tmp_path, "digits", {"coop": drifting}, "unbiased_shots")
    backbones = tmp_path / "backbones.csv"
    pd.DataFrame({"dataset": ["digits"], "linear_probe": [85.0]}).to_csv(backbones, index=False)  # a percentage
    checks, _ = build_calibration(files, ["digits"], backbones)
    verdicts = _verdicts(checks, "digits")
    for check in ("coop_base_gain", "coop_novel_drop", "cocoop_hm_gain", "coop_shortcut", "negative_control", "linear_probe"):
        assert verdicts[check] == FAIL, check
    assert verdicts["kgcoop_hm_gain"] == PASS
    md = to_markdown(checks, _)
    assert "Fail: coop_base_gain (+2.0 ± " in md and "real +13.35" in md


def test_a_check_whose_methods_are_not_in_the_run_is_skipped_and_says_which(tmp_path):
    without = {k: v for k, v in CALIBRATED.items() if k not in ("cocoop", "maple")}
    checks, _ = build_calibration(_files(tmp_path, without, control=False), ["shapes", "digits"])
    verdicts = _verdicts(checks, "digits")
    assert verdicts["cocoop_hm_gain"] == SKIPPED and verdicts["hm_ranking"] == SKIPPED
    assert verdicts["negative_control"] == SKIPPED and verdicts["linear_probe"] == UNMEASURED
    notes = dict(checks.loc[checks["dataset"] == "digits", ["check", "note"]].itertuples(index=False))
    assert notes["hm_ranking"] == "not in the run: cocoop, maple"
    assert notes["negative_control"] == "not in the run: coop (unbiased_shots)"
    assert verdicts["coop_base_gain"] == PASS


def test_the_report_is_written_with_its_sentences(tmp_path):
    checks, dicap = build_calibration(_files(tmp_path), ["shapes", "digits"])
    write_calibration(checks, dicap, tmp_path / "c.csv", tmp_path / "c.md")
    md = (tmp_path / "c.md").read_text()
    assert md == to_markdown(checks, dicap)
    assert "- **digits**: 7 of 7 judged checks pass. Not measured: linear_probe" in md
    assert "- **shapes**: 6 of 6 judged checks pass. Skipped: negative_control (not in the run: coop (unbiased_shots))." in md
    assert "## DiCap against its own learner" in md and "| digits | dicap_kgcoop | kgcoop |" in md
    assert all(line.count("|") == 9 for line in md.splitlines() if line.startswith("| digits | negative_control"))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "c.csv"), checks, check_dtype=False)


def test_the_real_numbers_are_the_documented_ones():
    assert real("coop", "base") - real("zeroshot", "base") == pytest.approx(13.35)
    assert real("coop", "novel") - real("zeroshot", "novel") == pytest.approx(-11.0)
    assert real("cocoop", "hm") - real("coop", "hm") == pytest.approx(4.17)
    assert real("kgcoop", "hm") - real("coop", "hm") == pytest.approx(5.34)
    assert sorted(REAL, key=lambda m: -real(m, "hm")) == ["maple", "kgcoop", "cocoop", "zeroshot", "coop"]


@pytest.mark.parametrize("seed", range(5))
def test_kendall_tau(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=6)
    assert kendall_tau(x, x) == pytest.approx(1.0) and kendall_tau(x, -x) == pytest.approx(-1.0)
    y = np.round(rng.normal(size=6))  # ties
    assert -1 <= kendall_tau(x, y) <= 1 and kendall_tau(x, y) == pytest.approx(kendall_tau(y, x))
    stats = pytest.importorskip("scipy.stats")
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)


def test_kendall_tau_of_a_constant_scoring_is_undefined():
    assert np.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


def test_a_truncated_backbone_report_names_itself(tmp_path):
    """Read through dicap.io: a damaged table names its file."""
    from helpers import assert_corrupt, truncated_table

    backbones = truncated_table(tmp_path / "backbones.csv")
    assert_corrupt(backbones, build_calibration, _files(tmp_path), ["shapes", "digits"], backbones)
