"""Paired comparisons (report/paired.py): the t quantile, Δ ± SE with its 95% interval and verdict,
who is compared with whom (a DiCap method with its own learner, never CoOp's unless CoOp is it),
and the pairing by seed."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from dicap import layout
from dicap.prompting.methods import METHODS, parse_method
from dicap.report.paired import (
    GAIN, LOSS, NOISE, T975, TOO_FEW, Z975, as_paired, learner_variant, markdown_cells, own_learner, paired,
    paired_table, reading, t_quantile, zero_shot,
)

# t_{0.975}(df) from any statistics textbook's table, 3 decimals
TEXTBOOK = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 10: 2.228, 20: 2.086, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


@pytest.mark.parametrize("df, expected", sorted(TEXTBOOK.items()))
def test_t_quantile_matches_the_textbook_table(df, expected):
    assert t_quantile(df) == pytest.approx(expected, abs=6e-4)


def test_t_quantile_falls_smoothly_to_the_normal_quantile():
    values = [t_quantile(df) for df in range(1, 400)]
    assert all(a > b for a, b in itertools.pairwise(values))  # strictly decreasing, across the table's end too
    assert t_quantile(30) - t_quantile(31) < t_quantile(29) - t_quantile(30)  # no jump where the expansion takes over
    assert t_quantile(10**6) == pytest.approx(Z975, abs=1e-5)


def test_t_quantile_agrees_with_scipy_where_it_is_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in [*range(1, 61), 100, 1000]:
        assert t_quantile(df) == pytest.approx(stats.t.ppf(0.975, df), abs=6e-5), df


@pytest.mark.parametrize("df", [0, -1, 2.5])
def test_t_quantile_refuses_a_bad_df(df):
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(df)


def test_paired_summary_of_known_differences():
    result = paired([1.0, 2.0, 3.0])
    assert (result.n, result.delta, result.std) == (3, 2.0, 1.0)
    assert result.se == pytest.approx(1 / math.sqrt(3))
    assert result.low == pytest.approx(2 - T975[1] / math.sqrt(3)) and result.high == pytest.approx(2 + T975[1] / math.sqrt(3))
    assert result.text() == "+2.00 ± 0.58 [-0.48, +4.48] within noise"  # half-width 4.303 / sqrt(3) = 2.48 > 2


def test_verdict_follows_the_interval():
    assert paired([1.0, 2.0, 3.0]).verdict == NOISE  # [-0.48, +4.48]
    assert paired([2.0, 2.1, 1.9]).verdict == GAIN
    assert paired([-2.0, -2.1, -1.9]).verdict == LOSS
    assert paired([5.0]).verdict == TOO_FEW and math.isnan(paired([5.0]).se)
    assert paired([1.0, np.nan, 3.0]).n == 2  # a seed one side lacks is left out
    with pytest.raises(ValueError, match="no seed"):
        paired([np.nan])


@pytest.mark.parametrize("seed", range(6))
def test_verdict_is_the_sign_of_an_interval_that_excludes_zero_and_flips_with_the_sign(seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(rng.normal(0, 2), rng.uniform(0.1, 3), size=int(rng.integers(2, 8)))
    result, flipped = paired(values), paired(-values)
    assert result.low <= result.delta <= result.high
    expected = GAIN if result.low > 0 else LOSS if result.high < 0 else NOISE
    assert result.verdict == expected
    assert flipped.verdict == {GAIN: LOSS, LOSS: GAIN, NOISE: NOISE}[expected]
    assert as_paired({"n": result.n, "delta": result.delta, "se": result.se}).text() == result.text()


# --- who is compared with whom ---------------------------------------------------------------------


RUNS = [(layout.MAIN, m) for m in ("zeroshot", "coop", "kgcoop", "dicap", "dicap_kgcoop", "dicap_pos_kgcoop")]
RUNS += [(layout.TRUE_CF, "dicap"), (layout.TRUE_CF, "dicap_kgcoop"), (layout.UNBIASED_SHOTS, "coop")]


@pytest.mark.parametrize("variant, method, expected", [
    (layout.MAIN, "dicap_kgcoop", (layout.MAIN, "kgcoop")),
    (layout.MAIN, "dicap_pos_kgcoop", (layout.MAIN, "kgcoop")),
    (layout.MAIN, "dicap", (layout.MAIN, "coop")),
    (layout.TRUE_CF, "dicap_kgcoop", (layout.MAIN, "kgcoop")),  # the learner reads no counterfactual: main's run is its run
    (layout.MAIN, "kgcoop", None),
    (layout.MAIN, "zeroshot", None),
    (layout.MAIN, "dicap_maple", None),  # its learner is not in the run: no comparison, and never CoOp
])
def test_a_dicap_method_is_judged_against_its_own_learner(variant, method, expected):
    assert own_learner(variant, method, RUNS) == expected


def test_learner_variant_only_reaches_main_when_the_variant_changes_only_the_counterfactuals():
    assert learner_variant(layout.TRUE_CF) == layout.MAIN
    assert learner_variant(layout.guidance_variant(3.0, {"guidance_scale": 1.0})) == layout.MAIN
    assert learner_variant(layout.UNBIASED_SHOTS) is None
    assert learner_variant(layout.context_variant(8)) is None
    assert own_learner(layout.context_variant(8), "dicap", [(layout.MAIN, "coop")]) is None


def test_learners_are_judged_against_zero_shot():
    assert zero_shot(layout.UNBIASED_SHOTS, "coop", RUNS) == (layout.MAIN, "zeroshot")
    assert zero_shot(layout.MAIN, "kgcoop", RUNS) == (layout.MAIN, "zeroshot")
    assert zero_shot(layout.MAIN, "dicap", RUNS) is None and zero_shot(layout.MAIN, "zeroshot", RUNS) is None
    assert zero_shot(layout.MAIN, "coop", [(layout.MAIN, "coop")]) is None


@pytest.mark.parametrize("method, expected", [("dicap", "dicap"), ("dicap_pos", "dicap_pos"), ("dicap_kgcoop", "dicap"),
                                              ("dicap_pos_maple", "dicap_pos")])
def test_reading_is_the_coop_version(method, expected):
    assert reading(method) == expected


def test_every_counterfactual_method_has_a_reading_that_is_itself_on_coop():
    for method in METHODS:
        parsed = parse_method(method)
        if not parsed.uses_counterfactuals:
            with pytest.raises(ValueError, match="no counterfactual term"):
                reading(method)
            continue
        on_coop = parse_method(reading(method))
        assert on_coop.learner == parse_method("zeroshot").learner
        assert (on_coop.hard_negative, on_coop.cf_positive) == (parsed.hard_negative, parsed.cf_positive)


# --- the table -------------------------------------------------------------------------------------


def _per_seed(values: dict[tuple[str, str], list[float]], seeds=(1, 2, 3)) -> pd.DataFrame:
    rows = [{"dataset": "digits", "variant": v, "method": m, "seed": s, "acc": x}
            for (v, m), xs in values.items() for s, x in zip(seeds, xs)]
    return pd.DataFrame(rows).sample(frac=1, random_state=0)  # any row order: the seed pairs them


def test_paired_table_pairs_by_seed_and_never_compares_with_another_learner():
    values = {(layout.MAIN, "zeroshot"): [50, 50, 50], (layout.MAIN, "coop"): [60, 70, 80],
              (layout.MAIN, "kgcoop"): [55, 65, 75], (layout.MAIN, "dicap_kgcoop"): [56, 66, 76],
              (layout.TRUE_CF, "dicap_kgcoop"): [57, 67, 77]}
    dicap = paired_table(_per_seed(values), ["acc"]).set_index("variant")
    assert set(dicap["baseline"]) == {"kgcoop"}  # not coop, whose numbers would give -4 here
    assert dicap.loc[layout.MAIN, "delta"] == pytest.approx(1.0) and dicap.loc[layout.MAIN, "se"] == pytest.approx(0.0)
    assert dicap.loc[layout.TRUE_CF, "delta"] == pytest.approx(2.0)
    assert dicap.loc[layout.TRUE_CF, "baseline_variant"] == layout.MAIN
    assert dicap.loc[layout.MAIN, "verdict"] == GAIN and dicap.loc[layout.MAIN, "n"] == 3
    learners = paired_table(_per_seed(values), ["acc"], against="zeroshot").set_index("method")
    assert set(learners.index) == {"coop", "kgcoop"}
    assert learners.loc["coop", "delta"] == pytest.approx(20.0) and learners.loc["coop", "se"] == pytest.approx(10 / math.sqrt(3))


def test_paired_table_uses_only_the_seeds_both_runs_have():
    values = {(layout.MAIN, "coop"): [60, 70, 80], (layout.MAIN, "dicap"): [61, 72]}
    table = paired_table(_per_seed(values), ["acc"])
    assert table["n"].tolist() == [2] and table["delta"].tolist() == [1.5]


def test_markdown_cells_give_one_row_per_comparison():
    values = {(layout.MAIN, "coop"): [60, 70, 80], (layout.MAIN, "dicap"): [62, 71, 83]}
    per_seed = _per_seed(values).assign(other=lambda f: f["acc"] / 2)
    rows = markdown_cells(paired_table(per_seed, ["acc", "other"]), ["acc", "other", "missing"], ["method", "baseline"])
    assert rows == [["dicap", "coop", paired([2, 1, 3]).text(), paired([1, 0.5, 1.5]).text(), ""]]
