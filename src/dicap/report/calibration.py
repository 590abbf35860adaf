"""The calibration report: does the embedded suite behave like the real benchmark where it must?

A toy benchmark can only judge DiCap if its learners show the real benchmark's known
behaviour: CoOp gains on base classes and loses on novel ones, CoCoOp and KgCoOp beat CoOp's
HM, the learners rank by HM roughly as on the real benchmark, the biased shots teach CoOp a
shortcut that unbiased shots do not, and the frozen image features separate the classes.
Each check is computed per dataset from the per-seed metrics (Table 1's ``test_unbiased``
split for base, novel and HM; the shortcut's paired splits for the gaps), paired by seed
where it compares two methods, with the mean ± std over seeds and a pass or fail.  A check
whose methods are not in the run is skipped, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dicap import layout
from dicap.io import atomic_output, read_table, write_table
from dicap.prompting.methods import ZEROSHOT
from dicap.report.markdown import markdown_table
from dicap.report.paired import GAIN, LOSS, NOISE, Paired, markdown_cells, ordered, paired, paired_table, seed_differences
from dicap.report.shortcut import per_seed as shortcut_per_seed
from dicap.report.table import LINEAR_PROBE, METRICS, read_metrics

# The real base-to-novel benchmark: averages over its 11 datasets (ViT-B/16, 16 shots, 3 seeds), as
# (base, novel, HM).  From MaPLe's Table 1 and KgCoOp's (both CVPR 2023), collected in the table
# "Averages over the 11 datasets" of ../shared/notes/protocol.md.  Documented constants: the
# checks compare the toy's *direction* of each effect with these, never its size.
REAL: dict[str, tuple[float, float, float]] = {
    ZEROSHOT: (69.34, 74.22, 71.70),
    "coop": (82.69, 63.22, 71.66),
    "cocoop": (80.47, 71.69, 75.83),
    "kgcoop": (80.73, 73.60, 77.00),
    "maple": (82.28, 75.14, 78.55),
}
BASE_GAIN_MIN = 5.0  # CoOp base - zero-shot base, points (real: +13.4)
SHORTCUT_MIN = 10.0  # CoOp's aligned - conflict gap on the biased shots, points
TAU_MIN = 0.6  # Kendall tau between the run's HM ranking and the real one
PROBE_MIN = 90.0  # linear-probe accuracy (%) of the frozen image features on the downstream renders
CONTROL_SE = 2  # the negative control's gap within this many (paired) SE of zero-shot's
SPLIT = "test_unbiased"
PASS, FAIL, SKIPPED, UNMEASURED = "pass", "fail", "skipped", "not measured"
COLUMNS = ["dataset", "check", "claim", "value", "std", "se", "n", "bar", "real", "verdict", "note"]


def real(method: str, metric: str) -> float:
    return REAL[method][METRICS.index(metric)]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two scorings of the same items (ties counted as neither concordant
    nor discordant, and corrected for); NaN when either scoring is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(len(x), k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    pairs_x, pairs_y = np.count_nonzero(dx), np.count_nonzero(dy)
    if not pairs_x or not pairs_y:
        return float("nan")
    return float((dx * dy).sum() / np.sqrt(pairs_x * pairs_y))


# --- the per-seed numbers --------------------------------------------------------------------------


def runs_per_seed(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset, variant, method and seed: base, novel and HM on the unbiased split,
    and the shortcut gap (aligned - conflict) where the paired splits exist."""
    keys = ["dataset", "variant", "method", "seed"]
    unbiased = metrics.loc[metrics["split"] == SPLIT, [*keys, *METRICS]]
    if unbiased.empty:
        raise ValueError(f"the metrics hold no {SPLIT} rows: the calibration needs the embedded suite's unbiased test split")
    gaps = shortcut_per_seed(metrics)[[*keys, "gap"]]
    return unbiased.merge(gaps, on=keys, how="outer")


def _row(dataset: str, check: str, claim: str, bar: str, verdict: str, note: str = "", result: Paired | None = None,
         real_value: float = float("nan")) -> dict[str, Any]:
    numbers = ({"value": result.delta, "std": result.std, "se": result.se, "n": result.n} if result is not None
               else {"value": np.nan, "std": np.nan, "se": np.nan, "n": 0})
    return {"dataset": dataset, "check": check, "claim": claim, **numbers, "bar": bar, "real": real_value,
            "verdict": verdict, "note": note}


def _missing(runs: pd.DataFrame, needed: Sequence[tuple[str, str]]) -> list[str]:
    present = set(zip(runs["variant"], runs["method"]))
    return [m if v == layout.MAIN else f"{m} ({v})" for v, m in needed if (v, m) not in present]


def _skip(dataset: str, check: str, claim: str, bar: str, missing: list[str], real_value: float = float("nan")) -> dict[str, Any]:
    return _row(dataset, check, claim, bar, SKIPPED, f"not in the run: {', '.join(missing)}", real_value=real_value)


def paired_check(runs: pd.DataFrame, dataset: str, check: str, a: str, b: str, metric: str, bar: str,
                 passes, claim: str) -> dict[str, Any]:
    """``a`` − ``b`` on ``metric`` per seed (main variant), judged by ``passes(mean Δ)``."""
    real_value = real(a, metric) - real(b, metric)
    needed = [(layout.MAIN, a), (layout.MAIN, b)]
    if missing := _missing(runs, needed):
        return _skip(dataset, check, claim, bar, missing, real_value)
    result = paired(seed_differences(runs, *needed, metric))
    return _row(dataset, check, claim, bar, PASS if passes(result.delta) else FAIL,
                f"paired Δ {result.text(1)}", result, real_value)


def ranking_check(runs: pd.DataFrame, dataset: str) -> dict[str, Any]:
    """Kendall tau, per seed, between the HM ranking of the methods in :data:`REAL` and the real one."""
    claim, bar = f"Kendall τ between the HM ranking of {', '.join(REAL)} and the real one", f"≥ {TAU_MIN}"
    if missing := _missing(runs, [(layout.MAIN, m) for m in REAL]):
        return _skip(dataset, "hm_ranking", claim, bar, missing)
    main = runs[runs["variant"] == layout.MAIN].pivot_table(index="seed", columns="method", values="hm")
    taus = [kendall_tau(main.loc[s, list(REAL)], [real(m, "hm") for m in REAL]) for s in main.index]
    result = paired(taus)
    order = " > ".join(main[list(REAL)].mean().sort_values(ascending=False).index)
    return _row(dataset, "hm_ranking", claim, bar, PASS if result.delta >= TAU_MIN else FAIL,
                f"run's order by mean HM: {order}", result)


def shortcut_check(runs: pd.DataFrame, dataset: str) -> dict[str, Any]:
    claim, bar = "CoOp's aligned − conflict gap on the biased shots", f"≥ {SHORTCUT_MIN:g}"
    if missing := _missing(runs, [(layout.MAIN, "coop")]):
        return _skip(dataset, "coop_shortcut", claim, bar, missing)
    main = runs[runs["variant"] == layout.MAIN]
    gap = main.loc[main["method"] == "coop", "gap"]
    if gap.isna().all():
        return _row(dataset, "coop_shortcut", claim, bar, SKIPPED, "no paired (aligned, conflict) splits")
    result, zeroshot = paired(gap), main.loc[main["method"] == ZEROSHOT, "gap"].dropna()
    spread = f" ± {zeroshot.std(ddof=1):.1f}" if len(zeroshot) > 1 else ""
    note = f"zero-shot's gap: {zeroshot.mean():.1f}{spread}" if len(zeroshot) else "zero-shot not in the run"
    return _row(dataset, "coop_shortcut", claim, bar, PASS if result.delta >= SHORTCUT_MIN else FAIL, note, result)


def negative_control_check(runs: pd.DataFrame, dataset: str) -> dict[str, Any]:
    """CoOp on unbiased shots keeps zero-shot's gap: the paired difference within 2 SE of 0."""
    claim = "CoOp on unbiased shots: gap − zero-shot's gap"
    bar = f"Δ within ±{CONTROL_SE} SE of 0"
    needed = [(layout.UNBIASED_SHOTS, "coop"), (layout.MAIN, ZEROSHOT)]
    if missing := _missing(runs, needed):
        return _skip(dataset, "negative_control", claim, bar, missing)
    result = paired(seed_differences(runs, *needed, "gap"))
    inside = abs(result.delta) <= CONTROL_SE * result.se
    return _row(dataset, "negative_control", claim, bar, PASS if inside else FAIL,
                f"paired Δ {result.text(1)}; {CONTROL_SE} SE = {CONTROL_SE * result.se:.1f}", result)


def probe_check(backbones: pd.DataFrame | None, dataset: str) -> dict[str, Any]:
    """The frozen image features' linear-probe accuracy, read from results/backbones.csv when the
    CLIP report measured one (a fraction, as the report's zero-shot accuracy, or a percentage)."""
    claim, bar = "linear probe on the frozen image features, downstream renders (%)", f"≥ {PROBE_MIN:g}"
    if backbones is None or LINEAR_PROBE not in backbones:
        return _row(dataset, "linear_probe", claim, bar, UNMEASURED, f"no {LINEAR_PROBE} column in the backbone report")
    value = backbones.loc[backbones["dataset"] == dataset, LINEAR_PROBE]
    if value.empty or pd.isna(value.iloc[0]):
        return _row(dataset, "linear_probe", claim, bar, UNMEASURED, f"no {LINEAR_PROBE} for {dataset}")
    accuracy = float(value.iloc[0]) * (100 if float(value.iloc[0]) <= 1 else 1)
    result = Paired(1, accuracy, float("nan"), float("nan"))
    return _row(dataset, "linear_probe", claim, bar, PASS if accuracy >= PROBE_MIN else FAIL, "one measurement", result)


def build_calibration(metric_files: list[Path], datasets: list[str], backbones: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The checks per dataset, and DiCap against its own learner on HM (``test_unbiased``, paired by seed)."""
    runs = runs_per_seed(read_metrics(metric_files, datasets))
    probes = read_table(backbones) if backbones is not None and Path(backbones).exists() else None
    rows = []
    for dataset in datasets:
        mine = runs[runs["dataset"] == dataset]
        rows += [
            paired_check(mine, dataset, "coop_base_gain", "coop", ZEROSHOT, "base", f"≥ +{BASE_GAIN_MIN:g}",
                         lambda d: d >= BASE_GAIN_MIN, "CoOp base − zero-shot base"),
            paired_check(mine, dataset, "coop_novel_drop", "coop", ZEROSHOT, "novel", "< 0",
                         lambda d: d < 0, "CoOp novel − zero-shot novel"),
            paired_check(mine, dataset, "cocoop_hm_gain", "cocoop", "coop", "hm", "> 0", lambda d: d > 0, "CoCoOp HM − CoOp HM"),
            paired_check(mine, dataset, "kgcoop_hm_gain", "kgcoop", "coop", "hm", "> 0", lambda d: d > 0, "KgCoOp HM − CoOp HM"),
            ranking_check(mine, dataset),
            shortcut_check(mine, dataset),
            negative_control_check(mine, dataset),
            probe_check(probes, dataset),
        ]
    checks = pd.DataFrame(rows, columns=COLUMNS).round(4)
    unbiased = runs[runs["variant"] == layout.MAIN].dropna(subset=["hm"])
    dicap = ordered(paired_table(unbiased, ["hm"], by=("dataset",), against="learner"), {"dataset": datasets})
    return checks, dicap


# --- the report ------------------------------------------------------------------------------------


# How a check's value reads: a difference is signed, a level is not, tau has two decimals.
FORMATS = {"hm_ranking": ".2f", "coop_shortcut": ".1f", "linear_probe": ".1f"}


def _value(r: pd.Series) -> str:
    if pd.isna(r["value"]):
        return ""
    form = FORMATS.get(r["check"], "+.1f")
    number = format(r["value"], form)
    return number if pd.isna(r["std"]) else f"{number} ± {r['std']:.{form[-2]}f}"


def sentences(checks: pd.DataFrame, dicap: pd.DataFrame) -> list[str]:
    """The verdicts in words, per dataset, from the numbers."""
    lines = []
    for dataset, part in checks.groupby("dataset", sort=False):
        judged = part[part["verdict"].isin([PASS, FAIL])]
        failed = judged[judged["verdict"] == FAIL]
        text = [f"- **{dataset}**: {int((judged['verdict'] == PASS).sum())} of {len(judged)} judged checks pass."]
        if len(failed):
            text.append("Fail: " + "; ".join(f"{r['check']} ({_value(r)} against {r['bar']}"
                                             + (f"; real {r['real']:+.2f}" if pd.notna(r["real"]) else "") + ")"
                                             for _, r in failed.iterrows()) + ".")
        for verdict in (SKIPPED, UNMEASURED):
            other = part[part["verdict"] == verdict]
            if len(other):
                text.append(f"{verdict.capitalize()}: " + "; ".join(f"{r['check']} ({r['note']})" for _, r in other.iterrows()) + ".")
        lines.append(" ".join(text))
        verdicts = dicap.loc[dicap["dataset"] == dataset, "verdict"]
        if len(verdicts):
            counts = {v: int((verdicts == v).sum()) for v in (GAIN, LOSS, NOISE)}
            lines.append(f"- **{dataset}, DiCap on HM**: of {len(verdicts)} DiCap runs against their own learner, "
                         f"{counts[GAIN]} gain, {counts[LOSS]} lose and {counts[NOISE]} are within noise (95% t interval).")
    return lines


def to_markdown(checks: pd.DataFrame, dicap: pd.DataFrame) -> str:
    rows = ([r["dataset"], r["check"], r["claim"], _value(r), r["bar"],
             "" if pd.isna(r["real"]) else f"{r['real']:+.2f}", r["verdict"], r["note"]] for _, r in checks.iterrows())
    lines = ["# Calibration: does the embedded suite behave like the real benchmark?", "",
             f"Per dataset, on the unbiased test split ({SPLIT}) for base, novel and HM and on the shortcut's paired "
             "splits for the gaps; value = mean ± std over seeds (of the per-seed difference where two methods "
             "are compared, paired by seed).  `real` is the same difference on the real 11-dataset benchmark "
             "(ViT-B/16, MaPLe's and KgCoOp's Table 1).", "",
             *markdown_table(["dataset", "check", "claim", "value", "bar", "real", "verdict", "note"], rows), "",
             "## Verdicts", "", *sentences(checks, dicap), ""]
    if len(dicap):
        lines += [f"## DiCap against its own learner: HM on {SPLIT}, paired by seed", "",
                  f"Δ = DiCap − its learner per seed, mean ± SE [95% t interval] and the verdict: {GAIN} or {LOSS} when "
                  f"the interval excludes 0, else {NOISE}.", "",
                  *markdown_table(["dataset", "method", "learner", "Δ HM"],
                                  markdown_cells(dicap, ["hm"], ["dataset", "method", "baseline"])), ""]
    return "\n".join(lines)


def write_calibration(checks: pd.DataFrame, dicap: pd.DataFrame, out_csv: Path, out_md: Path) -> None:
    write_table(out_csv, checks)
    with atomic_output(out_md) as tmp:
        tmp.write_text(to_markdown(checks, dicap))
