"""The shortcut table: does a method lean on the background, and do the controls bracket it?

Table 1's unbiased split hides a background shortcut (only 1/8 of its images carry their
class's paired colour), so this report scores the embedded suite's paired splits instead:
the same test objects on their class's paired background (``aligned``) and on another
class's (``conflict``).  ``gap`` = aligned - conflict is the shortcut; ``worst_group`` is
the lowest per-class accuracy over both; ``novel`` is novel-class conflict accuracy.

Rows are zero-shot CLIP (its own gap is the chance tilt of the pairing), the learners on
the biased shots, and on the control datasets the two controls: CoOp on unbiased shots
(negative: no shortcut to learn) and the counterfactual methods on the *true*
counterfactuals (positive: what the loss can do with a perfect generator).  The verdicts
printed under the table are computed here from the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dicap import layout
from dicap.io import atomic_output, write_table
from dicap.prompting.methods import parse_method
from dicap.report.figures import pyplot, save_figure
from dicap.report.markdown import markdown_table
from dicap.report.table import over_seeds, read_metrics

ALIGNED, CONFLICT = "test_aligned", "test_conflict"
COLUMNS = ("aligned", "conflict", "gap", "worst_group", "novel", "novel_gap")


def per_seed(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset, variant, method and seed with the shortcut numbers."""
    keys = ["dataset", "variant", "method", "seed"]
    aligned = metrics[metrics["split"] == ALIGNED].set_index(keys)
    conflict = metrics[metrics["split"] == CONFLICT].set_index(keys)
    if aligned.empty or conflict.empty:
        raise ValueError(f"the metrics hold no {ALIGNED} and {CONFLICT} rows: the shortcut table needs the embedded suite's paired splits")
    frame = pd.DataFrame({
        "aligned": aligned["base"], "conflict": conflict["base"],
        "worst_group": np.minimum(aligned["base_worst"], conflict["base_worst"]),
        "novel": conflict["novel"], "novel_aligned": aligned["novel"],
    }).dropna()
    frame["gap"] = frame["aligned"] - frame["conflict"]
    frame["novel_gap"] = frame["novel_aligned"] - frame["novel"]
    return frame.reset_index()


def _describe(variant: str, method: str) -> dict[str, str]:
    """What a row trained on: which shots, which counterfactuals."""
    parsed = layout.parse_variant(variant)
    return {
        "shots": "none" if method == "zeroshot" else "unbiased" if parsed.unbiased_shots else "biased",
        "counterfactuals": parsed.counterfactuals if parse_method(method).uses_counterfactuals else "none",
    }


def build_shortcut(metric_files: list[Path], datasets: list[str]) -> pd.DataFrame:
    """Mean and std over seeds per dataset, variant and method, in the order the files list them."""
    seeds = per_seed(read_metrics(metric_files, datasets))
    rows: list[dict[str, Any]] = []
    for (dataset, variant, method), group in seeds.groupby(["dataset", "variant", "method"], sort=False):
        rows.append({"dataset": dataset, "method": method, "variant": variant, **_describe(variant, method),
                     **over_seeds(group, COLUMNS)})
    table = pd.DataFrame(rows)
    order = {d: i for i, d in enumerate(datasets)}
    return table.sort_values("dataset", key=lambda c: c.map(order), kind="stable").reset_index(drop=True).round(4)


def _row(table: pd.DataFrame, dataset: str, method: str, variant: str) -> pd.Series | None:
    found = table[(table["dataset"] == dataset) & (table["method"] == method) & (table["variant"] == variant)]
    return None if found.empty else found.iloc[0]


def verdicts(table: pd.DataFrame) -> list[str]:
    """The controls' checks, per dataset that has them, in words: computed, never typed."""
    lines = []
    for dataset in dict.fromkeys(table["dataset"]):
        coop, zeroshot = _row(table, dataset, "coop", layout.MAIN), _row(table, dataset, "zeroshot", layout.MAIN)
        unbiased = _row(table, dataset, "coop", layout.UNBIASED_SHOTS)
        true_rows = table[(table["dataset"] == dataset) & (table["variant"] == layout.TRUE_CF)]
        if coop is None:
            continue
        if unbiased is not None and zeroshot is not None:
            beyond = unbiased["gap"] - zeroshot["gap"]
            lines.append(f"- **{dataset}, negative control**: CoOp on unbiased shots has a gap of {unbiased['gap']:.1f} "
                         f"(± {unbiased['gap_std']:.1f}) against zero-shot's {zeroshot['gap']:.1f}: {beyond:+.1f} beyond "
                         f"zero-shot's own; CoOp on the biased shots: {coop['gap']:.1f} (± {coop['gap_std']:.1f}).")
        if true_rows.empty:
            continue
        best = true_rows.loc[true_rows["conflict"].idxmax()]
        margin = best["conflict"] - coop["conflict"]
        bar = 2 * max(best["conflict_std"], coop["conflict_std"])
        lines.append(f"- **{dataset}, positive control**: {best['method']} on the true counterfactuals reaches conflict "
                     f"{best['conflict']:.1f} against CoOp's {coop['conflict']:.1f}: {margin:+.1f}, "
                     f"{'more' if margin > bar else 'not more'} than twice the larger seed std ({bar:.1f}).")
        generated = _row(table, dataset, best["method"], layout.MAIN)
        if generated is not None and margin > 0:
            closed = (generated["conflict"] - coop["conflict"]) / margin
            what = f"closing {100 * closed:.0f}% of" if closed >= 0 else f"below CoOp: none ({100 * closed:.0f}%) of"
            lines.append(f"- **{dataset}, generator**: with the generated counterfactuals {best['method']} reaches "
                         f"conflict {generated['conflict']:.1f}, {what} the gap between CoOp and the "
                         "true-counterfactual bound.")
    return lines


def to_markdown(table: pd.DataFrame) -> str:
    headers = ["dataset", "method", "shots", "counterfactuals", *COLUMNS]
    rows = ([r["dataset"], r["method"], r["shots"], r["counterfactuals"],
             *(f"{r[c]:.1f} ± {r[f'{c}_std']:.1f}" for c in COLUMNS)] for _, r in table.iterrows())
    seeds = table["seeds"].iloc[0] if len(table) else ""
    return "\n".join([f"### Shortcut: base-class accuracy on paired renders (seeds: {seeds})", "",
                      *markdown_table(headers, rows), "", *verdicts(table), ""])


def label(row: pd.Series) -> str:
    """A row's name in the figure: the method, and what it trained on when that is not the default."""
    extra = [f"{row['shots']} shots"] if row["shots"] == "unbiased" else []
    extra += [f"{row['counterfactuals']} cf"] if row["counterfactuals"] == "true" else []
    return row["method"] + (f" ({', '.join(extra)})" if extra else "")


def plot_shortcut(table: pd.DataFrame, out: Path) -> None:
    """Per dataset: aligned, conflict, worst-group and novel accuracy per row, with seed std."""
    plt = pyplot()
    datasets = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(len(datasets), 1, figsize=(9, 3.4 * len(datasets)), squeeze=False)
    bars = ("aligned", "conflict", "worst_group", "novel")
    for ax, dataset in zip(axes[:, 0], datasets):
        rows = table[table["dataset"] == dataset]
        positions = np.arange(len(rows))
        width = 0.8 / len(bars)
        for i, column in enumerate(bars):
            ax.bar(positions + (i - (len(bars) - 1) / 2) * width, rows[column], width, yerr=rows[f"{column}_std"],
                   capsize=2, label=column)
        ax.set_xticks(positions, [label(r) for _, r in rows.iterrows()], fontsize=7, rotation=15)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(dataset, fontsize=9)
        ax.legend(fontsize=6, loc="lower right", ncols=len(bars))
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


def write_shortcut(table: pd.DataFrame, out_csv: Path, out_md: Path, out_png: Path) -> None:
    write_table(out_csv, table)
    with atomic_output(out_md) as tmp:
        tmp.write_text(to_markdown(table))
    plot_shortcut(table, out_png)
