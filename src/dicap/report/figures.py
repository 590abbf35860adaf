"""Figures for people: Table 1 as paired differences, the colours every method figure shares,
counterfactual grids, and the generator curve (quality over guidance scale and inversion depth)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dicap.counterfactual.shards import GENERATED, TRUE, UNGUIDED
from dicap.data.store import DatasetStore
from dicap.io import atomic_output, load_arrays, read_table
from dicap.prompting.methods import METHODS, ZEROSHOT, parse_method
from dicap.report.paired import GAIN, LOSS, reading
from dicap.report.table import SPLIT_ORDER


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: Path) -> None:
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png", metadata={"Software": None})


def method_colour(method: str) -> str:
    """One colour per kind of method, the same in every figure: zero-shot grey, the learners
    blue, each DiCap reading its own (by the reading, so dicap_pos_kgcoop matches dicap_pos)."""
    parsed = parse_method(method)
    if not parsed.trains:
        return "0.55"
    if not parsed.uses_counterfactuals:
        return "C0"
    readings = list(dict.fromkeys(reading(m) for m in METHODS if parse_method(m).uses_counterfactuals))
    return f"C{1 + readings.index(reading(parsed)) % 9}"


def legend_handles(methods, learner: str = "learner", dicap: str = "{reading}[_<learner>]", zeroshot: str | None = None) -> list:
    """Legend patches for the kinds of ``methods`` present, in the colours of :func:`method_colour`:
    the learners, each DiCap reading (``dicap`` formats ``{reading}``) and, if named, zero-shot."""
    plt = pyplot()
    parsed = [parse_method(m) for m in dict.fromkeys(methods)]
    readings = sorted({reading(p) for p in parsed if p.uses_counterfactuals}, key=METHODS.index)
    handles = []
    if zeroshot and any(not p.trains for p in parsed):
        handles.append(plt.Rectangle((0, 0), 1, 1, color=method_colour(ZEROSHOT), label=zeroshot))
    if any(p.trains and not p.uses_counterfactuals for p in parsed):
        handles.append(plt.Rectangle((0, 0), 1, 1, color=method_colour(parse_method(ZEROSHOT).learner), label=learner))
    return handles + [plt.Rectangle((0, 0), 1, 1, color=method_colour(r), label=dicap.format(reading=r)) for r in readings]


def primary_split(splits) -> str:
    """The split a figure of Table 1 shows: the unbiased test split on the embedded suite, ``test`` on the paper suite."""
    present = list(dict.fromkeys(splits))
    return min(present, key=lambda s: SPLIT_ORDER.get(s, len(SPLIT_ORDER)))


@dataclass(frozen=True)
class Bar:
    label: str
    bottom: float  # where the bar starts: 0 (zero-shot) for a learner, its learner's level for DiCap
    height: float  # the paired difference it shows
    se: float
    colour: str
    significant: bool  # the 95% interval excludes 0


def table1_bars(paired: pd.DataFrame) -> list[list[Bar]]:
    """One dataset's HM comparisons as groups of bars, one group per learner: the learner's
    paired difference from zero-shot, then each of its DiCap variants' from it, each DiCap bar
    starting where its learner's ends (so its top reads against zero-shot too)."""
    level: dict[str, float] = {}
    groups: dict[str, list[Bar]] = {}
    for _, r in paired[paired["baseline"] == ZEROSHOT].iterrows():
        level[r["method"]] = r["delta"]
        groups[r["method"]] = [Bar(r["method"], 0.0, r["delta"], r["se"], method_colour(r["method"]), r["verdict"] in (GAIN, LOSS))]
    for _, r in paired[paired["baseline"] != ZEROSHOT].iterrows():
        learner = r["baseline"]
        if learner not in groups:  # zero-shot is not in the run: the learner stands at 0
            level[learner] = 0.0
            groups[learner] = [Bar(f"{learner} (no zero-shot)", 0.0, 0.0, float("nan"), method_colour(learner), False)]
        groups[learner].append(Bar(r["method"], level[learner], r["delta"], r["se"], method_colour(r["method"]),
                                   r["verdict"] in (GAIN, LOSS)))
    return list(groups.values())


def draw_table1(paired: pd.DataFrame, metric: str = "hm"):
    """The figure of :func:`plot_table1`, returned for the caller to save (or a test to measure)."""
    plt = pyplot()
    split = primary_split(paired["split"])
    rows = paired[(paired["split"] == split) & (paired["metric"] == metric)]
    datasets = list(dict.fromkeys(rows["dataset"]))
    per_dataset = {d: table1_bars(rows[rows["dataset"] == d]) for d in datasets}
    widest = max((sum(len(g) for g in groups) + len(groups) for groups in per_dataset.values()), default=1)
    fig, axes = plt.subplots(1, max(len(datasets), 1), figsize=(max(4.0, 0.32 * widest + 1.6) * max(len(datasets), 1), 4.6),
                             squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        x, ticks, labels = 0.0, [], []
        for group in per_dataset[dataset]:
            start = x
            for bar in group:
                ax.bar(x, bar.height, 0.8, bottom=bar.bottom, color=bar.colour, edgecolor="black", linewidth=0.4,
                       yerr=None if np.isnan(bar.se) else bar.se, capsize=2, error_kw={"elinewidth": 0.8})
                if bar.significant:
                    tip = bar.bottom + bar.height + np.sign(bar.height) * (bar.se if not np.isnan(bar.se) else 0)
                    ax.annotate("*", (x, tip), xytext=(0, 3 if bar.height >= 0 else -9), textcoords="offset points",
                                ha="center", fontsize=8)
                ticks.append(x)
                labels.append(bar.label)
                x += 1.0
            if len(group) > 1:  # the learner's level, which its DiCap bars start from
                ax.hlines(group[0].bottom + group[0].height, start - 0.45, x - 0.55, colors=group[0].colour,
                          linestyles=":", linewidth=1)
            x += 0.8
        ax.axhline(0, color="black", linewidth=1)
        ax.set_xticks(ticks, labels, rotation=90, fontsize=7)
        ax.use_sticky_edges = False  # room above and below: zero-shot's line is never the frame
        ax.margins(y=0.12)
        ax.set_title(f"{dataset} ({split})", fontsize=9)
        ax.grid(axis="y", linewidth=0.3, alpha=0.5)
    axes[0][0].set_ylabel(f"{metric.upper()} difference (points), paired by seed, ± SE")
    handles = [plt.Line2D([], [], color="black", linewidth=1, label="zero-shot (0)"),
               *legend_handles([*rows["method"], *rows["baseline"]], learner="learner − zero-shot",
                               dicap="{reading}[_<learner>] − its learner")]
    fig.legend(handles=handles, loc="upper center", ncols=len(handles), fontsize=7, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle("Each learner against zero-shot, each DiCap variant against its own learner (starting at the "
                 "learner's level); * = the 95% interval excludes 0", fontsize=8, y=1.06)
    fig.tight_layout()
    return fig


def plot_table1(paired_csv: Path, out: Path) -> None:
    """Table 1 as paired differences (results/table1_paired.csv): per dataset, each learner's HM
    against zero-shot and, beside it, each of its DiCap variants' against it, with SE bars.

    The question the figure answers is whether DiCap's term moves its learner beyond seed
    noise; absolute accuracies (Table 1 itself) would bury differences of a point under a
    0-100 axis.
    """
    plt = pyplot()
    fig = draw_table1(read_table(paired_csv))
    save_figure(fig, out)
    plt.close(fig)


def plot_counterfactual_grid(
    dataset_dir: Path, split_file: Path, images: list[Path], audits: list[Path], out: Path, n: int = 8
) -> None:
    """One row per example: factual | guidance_scale = 0 | generated at each guidance scale | true counterfactual.

    ``images`` and ``audits`` are merged counterfactual files and their per-image audits,
    one pair per guidance scale, the first being the main run (which also holds the unguided guidance_scale = 0
    regeneration and the true counterfactual).  Each cell's caption is the independent
    oracle's verdict: a tick when it sees ``y_cf``, else the class it sees.
    """
    from dicap.audit.oracle import label_name  # torch: only this figure needs it

    plt = pyplot()
    store = DatasetStore.open(dataset_dir)
    split = read_table(split_file)
    runs = [(load_arrays(i), read_table(a)) for i, a in zip(images, audits)]
    main_arrays, main_audit = runs[0]
    pick = np.linspace(0, len(main_audit) - 1, min(n, len(main_audit))).round().astype(int)
    columns = [("factual", store.pixels(split.iloc[main_audit["row"].to_numpy()[pick]]), None)]
    columns.append(("guidance_scale = 0 (unguided)", main_arrays[UNGUIDED][pick], main_audit["unguided_oracle_label"].to_numpy()[pick]))
    for arrays, audit in sorted(runs, key=lambda run: float(run[1]["guidance_scale"].iloc[0])):
        columns.append((f"guidance_scale = {float(audit['guidance_scale'].iloc[0]):g}", arrays[GENERATED][pick], audit["oracle_label"].to_numpy()[pick]))
    columns.append(("true cf", main_arrays[TRUE][pick], main_audit["true_oracle_label"].to_numpy()[pick]))
    fig, axes = plt.subplots(len(pick), len(columns), figsize=(1.05 * len(columns) + 1.2, 1.05 * len(pick)), squeeze=False)
    for r, i in enumerate(pick):
        y, y_cf = int(main_audit["y"].iloc[i]), int(main_audit["y_cf"].iloc[i])
        for c, (name, imgs, verdicts) in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(imgs[r], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=7, pad=10)
            if verdicts is not None:
                seen = int(verdicts[r])
                ok = seen == y_cf
                ax.text(0.5, 1.02, "✓" if ok else f"✗ {label_name(store.classes, seen)}", transform=ax.transAxes, ha="center",
                        va="bottom", fontsize=6, color="green" if ok else "red")
            if c == 0:
                ax.set_ylabel(f"{store.classes[y]}\n→ {store.classes[y_cf]}", fontsize=7)
    fig.suptitle(f"{store.dataset}: oracle verdict above each counterfactual (✓ = sees the target class)", fontsize=8)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


# The generator curve's panels: column of audit/generator_curve.py -> axis label.
CURVE_PANELS = {"valid": "validity (oracle reads y_cf)", "faithful": "faithful (valid, 4 factors kept)",
                "clip_cosine_to_true": "CLIP cosine to the true cf"}
CURVE_SETTING = ["guidance_scale", "inversion_depth"]


def curve_means(curve: pd.DataFrame) -> pd.DataFrame:
    """Mean over images per setting (guidance scale, inversion depth), sorted, with ``images``."""
    columns = [*CURVE_PANELS, "valid_bg_kept", "factual_clip_cosine_to_true"]
    grouped = curve.groupby(CURVE_SETTING)
    return grouped[columns].mean().astype(float).assign(images=grouped.size()).reset_index().sort_values(CURVE_SETTING,
                                                                                                         ignore_index=True)


def draw_generator_curve(curves: dict[str, pd.DataFrame], guidance_scale: float, inversion_depth: float):
    """The figure of :func:`plot_generator_curve` from per-image curves by dataset, returned."""
    plt = pyplot()
    height = 2.7 * len(curves) + 0.7  # the rows, and room for the title above and the legend below (inches)
    fig, axes = plt.subplots(len(curves), len(CURVE_PANELS), figsize=(3.3 * len(CURVE_PANELS), height), squeeze=False)
    for row, (dataset, curve) in zip(axes, curves.items()):
        means = curve_means(curve)
        depths = sorted(means["inversion_depth"].unique())
        for ax, (column, label) in zip(row, CURVE_PANELS.items()):
            for i, depth in enumerate(depths):
                line = means[means["inversion_depth"] == depth]
                ax.plot(line["guidance_scale"], line[column], marker="o", markersize=3, linewidth=1,
                        color=plt.cm.viridis(i / max(len(depths) - 1, 1)), label=f"depth {depth:g}")
            default = means[np.isclose(means["guidance_scale"], guidance_scale) & np.isclose(means["inversion_depth"], inversion_depth)]
            ax.plot(default["guidance_scale"], default[column], linestyle="none", marker="*", markersize=14, color="red",
                    markeredgecolor="black", zorder=5, label=f"default (s = {guidance_scale:g}, depth {inversion_depth:g})")
            if column == "clip_cosine_to_true":  # what no action scores: the bar a counterfactual must clear
                ax.axhline(means["factual_clip_cosine_to_true"].iloc[0], color="0.4", linestyle="--", linewidth=1,
                           label="factual image")
            else:  # shares: the whole range, so the datasets' rows compare at a glance
                ax.set_ylim(-0.03, 1.03)
            ax.set_xlabel("guidance scale s", fontsize=8)
            ax.set_ylabel(label, fontsize=8)
            ax.set_title(f"{dataset} ({int(means['images'].iloc[0])} images)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(linewidth=0.3, alpha=0.5)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=len(labels), fontsize=7, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle("Counterfactual generator over guidance scale and inversion depth (fixed images of the first seed's shots)",
                 fontsize=8)
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1 - 0.1 / height))
    return fig


def plot_generator_curve(curves: dict[str, Path], guidance_scale: float, inversion_depth: float, out: Path) -> None:
    """Validity, faithfulness and the CLIP cosine to the true counterfactual against the
    guidance scale, one line per inversion depth and one row per dataset, the config's own
    setting starred: where the default sits on the generator's curve."""
    plt = pyplot()
    fig = draw_generator_curve({d: read_table(p) for d, p in curves.items()}, guidance_scale, inversion_depth)
    save_figure(fig, out)
    plt.close(fig)
