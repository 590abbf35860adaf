"""Paired comparisons over seeds: is a method's difference from its baseline more than seed noise?

Two methods trained on the same seed share its few-shot draw, its counterfactuals and its
test pairing, so most of the seed-to-seed swing cancels in their per-seed difference.  Every
judgement of DiCap is therefore made on Δ = DiCap − baseline *per seed*, with the standard
error of Δ and a 95% Student t interval over the seeds (three by default: df = 2, t = 4.30).

A DiCap method is judged against its own learner (``dicap_kgcoop`` against ``kgcoop``, from
:func:`~dicap.prompting.methods.parse_method`), never against CoOp unless CoOp is its
learner; a learner against zero-shot.  A variant that changes only the counterfactuals
(``true_cf``, another guidance scale or sampling) trains no learner of its own: its DiCap
runs are paired with the learner of ``main``, which is the same run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from dicap import layout
from dicap.prompting.methods import METHODS, ZEROSHOT, Method, parse_method

LEVEL = 0.95  # the confidence level of every interval in the reports
# Student t's two-sided 95% quantile, t_{0.975}(df), for df = 1..30 (the standard table, 4 decimals).
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
        2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
        2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
Z975 = 1.959963984540054  # the standard normal's 0.975 quantile
GAIN, LOSS, NOISE, TOO_FEW = "gain", "loss", "within noise", "one seed"


def t_quantile(df: int) -> float:
    """t_{0.975}(df): the table up to 30, beyond it the Cornish-Fisher expansion around the
    normal quantile (within 1e-7 of the exact value from df = 30 on, so the two agree where they meet)."""
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom {df!r}: expected a whole number, 1 or more")
    if df <= len(T975):
        return T975[int(df) - 1]
    z, v = Z975, float(df)
    return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4))


@dataclass(frozen=True)
class Paired:
    """The per-seed differences of one comparison, summarised."""

    n: int
    delta: float  # mean of the per-seed differences
    std: float  # their sample std (NaN for one seed)
    se: float  # std / sqrt(n)

    @property
    def half_width(self) -> float:
        return self.se * t_quantile(self.n - 1) if self.n > 1 else math.nan

    @property
    def low(self) -> float:
        return self.delta - self.half_width

    @property
    def high(self) -> float:
        return self.delta + self.half_width

    @property
    def verdict(self) -> str:
        """``gain`` or ``loss`` when the 95% interval excludes 0, ``within noise`` when it holds it."""
        if self.n < 2:
            return TOO_FEW
        return GAIN if self.low > 0 else LOSS if self.high < 0 else NOISE

    def text(self, digits: int = 2) -> str:
        """``+1.23 ± 0.45 [−0.7, +3.2] within noise``: Δ ± SE, the 95% interval, the verdict."""
        if self.n < 2:
            return f"{self.delta:+.{digits}f} ({TOO_FEW})"
        return f"{self.delta:+.{digits}f} ± {self.se:.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] {self.verdict}"


def paired(differences: Iterable[float]) -> Paired:
    """Summarise per-seed differences (NaNs, seeds one side lacks, are left out)."""
    values = np.asarray([d for d in differences if not pd.isna(d)], dtype=float)
    if not len(values):
        raise ValueError("no seed has both runs of the comparison")
    std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return Paired(len(values), float(values.mean()), std, std / math.sqrt(len(values)))


def seed_differences(runs: pd.DataFrame, a: tuple[str, str], b: tuple[str, str], metric: str) -> pd.Series:
    """``a`` − ``b`` per seed for one metric; ``runs`` holds one row per (variant, method, seed)
    of one dataset (and split); ``a`` and ``b`` are (variant, method)."""
    def side(run: tuple[str, str]) -> pd.Series:
        rows = runs[(runs["variant"] == run[0]) & (runs["method"] == run[1])]
        if rows["seed"].duplicated().any():
            raise ValueError(f"{run[1]} in variant {run[0]} has more than one row per seed: group by split first")
        return rows.set_index("seed")[metric]
    differences = (side(a) - side(b)).dropna()
    if differences.empty:
        raise ValueError(f"no seed has {metric} for both {a[1]} ({a[0]}) and {b[1]} ({b[0]})")
    return differences


def compare(runs: pd.DataFrame, a: tuple[str, str], b: tuple[str, str], metric: str) -> Paired:
    return paired(seed_differences(runs, a, b, metric))


# --- who is compared with whom ---------------------------------------------------------------------


def learner_variant(variant: str) -> str | None:
    """Where a variant's learners ran: itself, or main when it changes only the counterfactuals
    (a learner reads none, so main's run is its run); None when it changes the shots or the prompt."""
    parsed = layout.parse_variant(variant)
    return None if parsed.unbiased_shots or parsed.prompt else layout.MAIN


def own_learner(variant: str, method: str, runs: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    """The run a DiCap method is judged against: its own learner, in its variant or in main."""
    parsed = parse_method(method)
    if not parsed.uses_counterfactuals:
        return None
    present = set(runs)
    for where in (variant, learner_variant(variant)):
        if where is not None and (where, parsed.learner) in present:
            return where, parsed.learner
    return None


def zero_shot(variant: str, method: str, runs: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    """The run a learner is judged against: zero-shot, which trains nothing, so any variant's is main's."""
    parsed = parse_method(method)
    if not parsed.trains or parsed.uses_counterfactuals:
        return None
    return (layout.MAIN, ZEROSHOT) if (layout.MAIN, ZEROSHOT) in set(runs) else None


def reading(method: str | Method) -> str:
    """A counterfactual method's loss reading, named by its CoOp version: ``dicap_pos_kgcoop`` ->
    ``dicap_pos``.  Found by the parsed method's flags, so a reading added to methods.py is known here."""
    parsed = method if isinstance(method, Method) else parse_method(method)
    if not parsed.uses_counterfactuals:
        raise ValueError(f"method {parsed.name!r} has no counterfactual term, hence no reading of it")
    on_coop = replace(parsed, name="", learner=parse_method(ZEROSHOT).learner)
    for name in METHODS:
        if replace(parse_method(name), name="") == on_coop:
            return name
    raise ValueError(f"method {parsed.name!r} has no CoOp version among the methods {METHODS}")


BASELINES = {"learner": own_learner, "zeroshot": zero_shot}


def paired_table(per_seed: pd.DataFrame, metrics: Sequence[str], by: Sequence[str] = ("dataset",),
                 against: str = "learner") -> pd.DataFrame:
    """Every run against its baseline (``learner``: DiCap against its own learner; ``zeroshot``:
    each learner against zero-shot), per group of ``by`` and metric, paired by seed.

    ``per_seed`` has one row per ``by`` group, variant, method and seed.  The rows keep the
    order in which the runs first appear.
    """
    baseline_of = BASELINES[against]
    rows = []
    for key, group in per_seed.groupby(list(by), sort=False):
        runs = list(dict.fromkeys(zip(group["variant"], group["method"])))
        for variant, method in runs:
            base = baseline_of(variant, method, runs)
            if base is None:
                continue
            for metric in metrics:
                result = compare(group, (variant, method), base, metric)
                rows.append({
                    **dict(zip(by, key)), "variant": variant, "method": method, "baseline_variant": base[0],
                    "baseline": base[1], "metric": metric, "n": result.n, "delta": result.delta, "se": result.se,
                    "ci_low": result.low, "ci_high": result.high, "verdict": result.verdict,
                })
    columns = [*by, "variant", "method", "baseline_variant", "baseline", "metric", "n", "delta", "se", "ci_low", "ci_high", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def paired_both(per_seed: pd.DataFrame, metrics: Sequence[str], by: Sequence[str], order: dict[str, Sequence[str]]) -> pd.DataFrame:
    """DiCap against its own learner, then the learners against zero-shot, sorted by
    :func:`ordered` (``order``: column -> its values in order)."""
    parts = [paired_table(per_seed, metrics, by=by, against=a) for a in ("learner", "zeroshot")]
    return ordered(pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True), order)


def ordered(table: pd.DataFrame, order: dict[str, Sequence[str]]) -> pd.DataFrame:
    """``table`` sorted (stably) by the columns of ``order``, each in its listed order, and rounded for the reports."""
    ranks = {column: {v: i for i, v in enumerate(values)} for column, values in order.items()}
    table = table.sort_values(list(order), key=lambda col: col.map(ranks[col.name]), kind="stable")
    return table.reset_index(drop=True).round(4)


def as_paired(row: pd.Series | dict) -> Paired:
    """A row of :func:`paired_table` back as a :class:`Paired` (its std from se and n)."""
    return Paired(int(row["n"]), float(row["delta"]), float(row["se"]) * math.sqrt(int(row["n"])), float(row["se"]))


def markdown_cells(table: pd.DataFrame, metrics: Sequence[str], keys: Sequence[str], digits: int = 2) -> list[list[str]]:
    """One Markdown row per ``keys`` group of a :func:`paired_table`: the keys, then each metric's
    ``Δ ± SE [95% CI] verdict`` (blank where the metric was not compared)."""
    rows = []
    for key, group in table.groupby(list(keys), sort=False):
        by_metric = {r["metric"]: as_paired(r).text(digits) for _, r in group.iterrows()}
        rows.append([*(str(k) for k in key), *(by_metric.get(m, "") for m in metrics)])
    return rows
