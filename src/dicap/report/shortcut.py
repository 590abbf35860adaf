"""The shortcut table: does a method lean on the background, and do the controls bracket it?

Table 1's unbiased split hides a background shortcut (only 1/8 of its images carry their
class's paired colour), so this report scores the embedded suite's paired splits instead:
the same test objects on their class's paired background (``aligned``) and on another
class's (``conflict``).  ``gap`` = aligned - conflict is the shortcut; ``worst_group`` is
the lowest per-class accuracy over both; ``novel`` is novel-class conflict accuracy.

Rows are zero-shot CLIP (its own gap is the chance tilt of the pairing), the learners on
the biased shots, and on the control datasets the two controls: CoOp on unbiased shots
(negative: no shortcut to learn) and the counterfactual methods on the *true*
counterfactuals (positive: what the loss can do with a perfect generator).

The shortcut rides on the background by default; ``data.spurious_factor`` moves it to the
object colour, the scale or the position, and the table and figure name the factor then (the
background's keep their words, so the default run writes the same files as before the key).

Every DiCap run is judged against its own learner, paired by seed (:mod:`dicap.report.paired`):
the controls' verdicts, and the dose-response, the share of the true counterfactuals' gain
over the learner that the generated ones reach, per loss reading and learner.  The sentences
under the table are computed here from the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dicap import layout
from dicap.data.scm import DEFAULT_SPURIOUS_FACTOR as DEFAULT_FACTOR
from dicap.io import atomic_output, write_table
from dicap.prompting.methods import ZEROSHOT, parse_method
from dicap.report.figures import legend_handles, method_colour, pyplot, save_figure
from dicap.report.markdown import markdown_table
from dicap.report.paired import GAIN, LOSS, NOISE, Paired, as_paired, markdown_cells, paired_both, reading, t_quantile
from dicap.report.table import over_seeds, read_metrics

ALIGNED, CONFLICT, UNBIASED = "test_aligned", "test_conflict", "test_unbiased"
COLUMNS = ("aligned", "conflict", "gap", "worst_group", "novel", "novel_gap")
# What DiCap is judged on against its own learner: the shortcut, and base accuracy on the
# unbiased split (Table 1's), which a method can buy by losing the shortcut's help.
PAIRED = {"conflict": "conflict", "gap": "gap", "worst_group": "worst group", "unbiased": "unbiased base"}
DOSE = ("conflict", "unbiased")  # the metrics whose true-counterfactual gain the generated ones are measured against
# The loss readings in words, by the reading's CoOp name (paired.reading); another reads as its name.
READINGS = {"dicap": "hard negative", "dicap_pos": "hard negative + labelled example", "dicap_label": "labelled example only"}
CONTROL_SE = 2  # a control passes when its paired difference is beyond (positive) or within (negative) this many SE


def factor_words(factor: str) -> str:
    """How a heading names the shortcut's factor: nothing for the background, the default."""
    return "" if factor == DEFAULT_FACTOR else f" on the {factor.replace('_', ' ')}"


def per_seed(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset, variant, method and seed with the shortcut numbers, and ``unbiased``:
    base accuracy on the unbiased split where the metrics have it."""
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
    frame["unbiased"] = metrics[metrics["split"] == UNBIASED].set_index(keys)["base"].reindex(frame.index)
    return frame.reset_index()


def read_seeds(metric_files: list[Path], datasets: list[str]) -> pd.DataFrame:
    return per_seed(read_metrics(metric_files, datasets))


def _describe(variant: str, method: str) -> dict[str, str]:
    """What a row trained on: which shots, which counterfactuals."""
    parsed = layout.parse_variant(variant)
    return {
        "shots": "none" if method == ZEROSHOT else "unbiased" if parsed.unbiased_shots else "biased",
        "counterfactuals": parsed.counterfactuals if parse_method(method).uses_counterfactuals else "none",
    }


def summarise(seeds: pd.DataFrame, datasets: list[str]) -> pd.DataFrame:
    """Mean, std and SE over seeds per dataset, variant and method, in the order the files list them."""
    rows: list[dict[str, Any]] = []
    for (dataset, variant, method), group in seeds.groupby(["dataset", "variant", "method"], sort=False):
        rows.append({"dataset": dataset, "method": method, "variant": variant, **_describe(variant, method),
                     **over_seeds(group, COLUMNS, standard_error=True)})
    table = pd.DataFrame(rows)
    order = {d: i for i, d in enumerate(datasets)}
    return table.sort_values("dataset", key=lambda c: c.map(order), kind="stable").reset_index(drop=True).round(4)


def build_shortcut(metric_files: list[Path], datasets: list[str]) -> pd.DataFrame:
    """The shortcut table of the per-seed metric files."""
    return summarise(read_seeds(metric_files, datasets), datasets)


def build_paired(seeds: pd.DataFrame, datasets: list[str]) -> pd.DataFrame:
    """DiCap against its own learner and the learners (the negative control included) against
    zero-shot, per dataset in ``datasets``' order, on :data:`PAIRED`'s metrics, paired by seed."""
    metrics = [m for m in PAIRED if seeds[m].notna().any()]
    return paired_both(seeds, metrics, ["dataset"], {"dataset": datasets})


# --- verdicts --------------------------------------------------------------------------------------


def _row(table: pd.DataFrame, dataset: str, method: str, variant: str) -> pd.Series | None:
    found = table[(table["dataset"] == dataset) & (table["method"] == method) & (table["variant"] == variant)]
    return None if found.empty else found.iloc[0]


def _paired(paired: pd.DataFrame, dataset: str, variant: str, method: str, metric: str) -> Paired | None:
    found = paired[(paired["dataset"] == dataset) & (paired["variant"] == variant) & (paired["method"] == method)
                   & (paired["metric"] == metric)]
    return None if found.empty else as_paired(found.iloc[0])


def reading_words(method: str) -> str:
    name = reading(method)
    return f"{name} ({READINGS[name]})" if name in READINGS else name


def share(generated: Paired, true: Paired) -> str:
    """The share of the true counterfactuals' gain over the learner that the generated ones
    reach, (generated − learner) / (true − learner); none when the true gain is not a gain."""
    if true.verdict != GAIN:
        return "no gain to share" + (" (the true counterfactuals lose)" if true.verdict == LOSS else "")
    return f"{100 * generated.delta / true.delta:.0f}%"


def negative_control(table: pd.DataFrame, paired: pd.DataFrame, dataset: str) -> list[str]:
    """CoOp on unbiased shots should keep zero-shot's gap: its paired difference within 2 SE."""
    unbiased, zeroshot = _row(table, dataset, "coop", layout.UNBIASED_SHOTS), _row(table, dataset, ZEROSHOT, layout.MAIN)
    control = _paired(paired, dataset, layout.UNBIASED_SHOTS, "coop", "gap")
    if unbiased is None or zeroshot is None or control is None:
        return []
    inside = abs(control.delta) <= CONTROL_SE * control.se
    coop = _row(table, dataset, "coop", layout.MAIN)
    biased = "" if coop is None else f" CoOp on the biased shots: {coop['gap']:.1f} ± {coop['gap_se']:.1f}."
    return [f"- **{dataset}, negative control**: CoOp on unbiased shots has a gap of {unbiased['gap']:.1f} "
            f"± {unbiased['gap_se']:.1f} against zero-shot's {zeroshot['gap']:.1f} ± {zeroshot['gap_se']:.1f}: "
            f"paired Δ {control.text(1)}, {'within' if inside else 'beyond'} {CONTROL_SE} SE "
            f"({CONTROL_SE * control.se:.1f}): {'passes' if inside else 'fails'}.{biased}"]


def positive_controls(paired: pd.DataFrame, dataset: str) -> list[str]:
    """Each DiCap run on the true counterfactuals should beat its own learner's conflict
    accuracy by more than 2 SE, paired by seed: one verdict per reading and learner."""
    lines = []
    rows = paired[(paired["dataset"] == dataset) & (paired["variant"] == layout.TRUE_CF) & (paired["metric"] == "conflict")]
    for _, r in rows.iterrows():
        result = as_paired(r)
        beyond = result.delta > CONTROL_SE * result.se
        lines.append(f"- **{dataset}, positive control, {reading_words(r['method'])} on {r['baseline']}**: "
                     f"{r['method']} on the true counterfactuals against {r['baseline']}'s conflict accuracy: "
                     f"Δ {result.text(1)}, {'more' if beyond else 'not more'} than {CONTROL_SE} SE "
                     f"({CONTROL_SE * result.se:.1f}): {'passes' if beyond else 'fails'}.")
    return lines


def dose_response(paired: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per reading and learner: the generated and the true counterfactuals' paired gains over
    the learner on :data:`DOSE`'s metrics, and the share of the true gain the generated reach."""
    rows = []
    part = paired[paired["dataset"] == dataset]
    for method in dict.fromkeys(part.loc[part["variant"] == layout.TRUE_CF, "method"]):
        for metric in DOSE:
            generated = _paired(part, dataset, layout.MAIN, method, metric)
            true = _paired(part, dataset, layout.TRUE_CF, method, metric)
            if generated is None or true is None:
                continue
            rows.append({"dataset": dataset, "reading": reading(method), "learner": parse_method(method).learner,
                         "metric": PAIRED[metric], "generated": generated.text(1), "true": true.text(1),
                         "share": share(generated, true)})
    return pd.DataFrame(rows)


def verdicts(table: pd.DataFrame, paired: pd.DataFrame) -> list[str]:
    """The controls' checks and the dose-response, per dataset that has them: computed, never typed."""
    lines = []
    for dataset in dict.fromkeys(table["dataset"]):
        lines += negative_control(table, paired, dataset)
        lines += positive_controls(paired, dataset)
        dose = dose_response(paired, dataset)
        if len(dose):
            lines += ["", f"**{dataset}, dose-response**: the share of the true counterfactuals' gain over the "
                      "learner that the generated counterfactuals reach, (generated − learner) / (true − learner); "
                      "none when the true gain's 95% interval holds 0.", "",
                      *markdown_table(["dataset", "reading", "learner", "metric", "Δ generated", "Δ true", "share"],
                                      dose.itertuples(index=False)), ""]
    return lines


def to_markdown(table: pd.DataFrame, paired: pd.DataFrame, factor: str = DEFAULT_FACTOR) -> str:
    headers = ["dataset", "method", "shots", "counterfactuals", *COLUMNS]
    rows = ([r["dataset"], r["method"], r["shots"], r["counterfactuals"],
             *(f"{r[c]:.1f} ± {r[f'{c}_se']:.1f}" for c in COLUMNS)] for _, r in table.iterrows())
    seeds = table["seeds"].iloc[0] if len(table) else ""
    lines = [f"### Shortcut{factor_words(factor)}: base-class accuracy on paired renders (seeds: {seeds})", "",
             "Mean ± standard error over seeds (SE = std / √n; the std is in the csv).", "",
             *markdown_table(headers, rows), ""]
    checks = verdicts(table, paired)
    if checks:
        n = int(table["n"].max())
        wider = f" (±{t_quantile(n - 1):.1f} SE for {n} seeds)" if n > 1 else ""
        lines += ["### The controls and the dose-response", "",
                  f"Each verdict is computed from the per-seed differences (Δ ± SE [95% t interval]).  A control's bar "
                  f"is {CONTROL_SE} SE; with few seeds the 95% t interval is wider{wider}, so a "
                  "control can pass and its Δ still read as within noise.", "", *checks, ""]
    metrics = [m for m in PAIRED if m in set(paired["metric"])]
    sections = (("DiCap against its own learner", paired[paired["baseline"] != ZEROSHOT], "learner",
                 "  A run on the true counterfactuals is paired with its learner's run in main (the same run: a "
                 "learner reads no counterfactual)."),
                ("The learners against zero-shot", paired[paired["baseline"] == ZEROSHOT], "zero-shot",
                 "  CoOp on unbiased shots is the negative control."))
    for title, part, name, note in sections:
        if part.empty:
            continue
        cells = markdown_cells(part, metrics, ["dataset", "variant", "method", "baseline"], digits=1)
        lines += [f"### {title}, paired by seed", "",
                  f"Δ = method − {name} per seed, mean ± SE [95% t interval] and the verdict: {GAIN} or {LOSS} "
                  f"when the interval excludes 0, else {NOISE}.{note}", "",
                  *markdown_table(["dataset", "variant", "method", "baseline", *(f"Δ {PAIRED[m]}" for m in metrics)], cells), ""]
    return "\n".join(lines)


# --- figure ----------------------------------------------------------------------------------------


def label(row: pd.Series) -> str:
    """A row's name in the figure: the method, and what it trained on when that is not the default."""
    extra = [f"{row['shots']} shots"] if row["shots"] == "unbiased" else []
    extra += [f"{row['counterfactuals']} cf"] if row["counterfactuals"] == "true" else []
    return row["method"] + (f" ({', '.join(extra)})" if extra else "")


def draw_shortcut(table: pd.DataFrame, factor: str = DEFAULT_FACTOR):
    """Per dataset, the gap (aligned − conflict) of every row as a horizontal bar with its SE:
    the main run's methods on top, the controls below a rule of their own; zero-shot's gap dashed."""
    plt = pyplot()
    datasets = list(dict.fromkeys(table["dataset"]))
    heights = [len(table[table["dataset"] == d]) + 2 for d in datasets]
    fig, axes = plt.subplots(len(datasets), 1, figsize=(7.5, 0.26 * sum(heights) + 1.2), squeeze=False, sharex=True,
                             gridspec_kw={"height_ratios": heights})
    for ax, dataset in zip(axes[:, 0], datasets):
        rows = table[table["dataset"] == dataset]
        main, controls = rows[rows["variant"] == layout.MAIN], rows[rows["variant"] != layout.MAIN]
        y = list(range(len(main))) + [len(main) + 1 + i for i in range(len(controls))]
        ordered = pd.concat([main, controls])
        ax.barh(y, ordered["gap"], xerr=ordered["gap_se"], color=[method_colour(m) for m in ordered["method"]],
                edgecolor="black", linewidth=0.4, capsize=2, height=0.7,
                hatch=["//" if v != layout.MAIN else "" for v in ordered["variant"]])
        ax.set_yticks(y, [label(r) for _, r in ordered.iterrows()], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="black", linewidth=0.8)
        zeroshot = _row(rows, dataset, ZEROSHOT, layout.MAIN)
        if zeroshot is not None:
            ax.axvline(zeroshot["gap"], color="0.4", linestyle="--", linewidth=0.8)
        if len(controls):  # the empty row between the two groups holds their label
            ax.axhline(len(main) - 0.5, color="0.3", linewidth=0.6)
            ax.text(0.01, len(main), "controls (hatched): true counterfactuals (positive), unbiased shots (negative)",
                    transform=ax.get_yaxis_transform(), ha="left", va="center", fontsize=7, style="italic")
        ax.set_title(f"{dataset}: the shortcut{factor_words(factor)}, aligned − conflict (mean ± SE over seeds)", fontsize=9)
        ax.grid(axis="x", linewidth=0.3, alpha=0.5)
    axes[-1, 0].set_xlabel("gap (accuracy points)")
    handles = [*legend_handles(table["method"], zeroshot="zero-shot"),
               plt.Line2D([], [], color="0.4", linestyle="--", linewidth=0.8, label="zero-shot's gap")]
    fig.tight_layout()
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=min(len(handles), 3), fontsize=7,
               frameon=False)
    return fig


def plot_shortcut(table: pd.DataFrame, out: Path, factor: str = DEFAULT_FACTOR) -> None:
    plt = pyplot()
    fig = draw_shortcut(table, factor)
    save_figure(fig, out)
    plt.close(fig)


def write_shortcut(table: pd.DataFrame, paired: pd.DataFrame, out_csv: Path, out_md: Path, out_png: Path,
                   factor: str = DEFAULT_FACTOR) -> None:
    write_table(out_csv, table)
    with atomic_output(out_md) as tmp:
        tmp.write_text(to_markdown(table, paired, factor))
    plot_shortcut(table, out_png, factor)
