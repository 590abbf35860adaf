"""Ablation tables and figures: counterfactual quality and DiCap accuracy per setting.

One table shape serves every ablation: a row per dataset, variant and method with the
variant's settings (``guidance_scale``, ``sampling``, which counterfactuals), its audit scores and the
method's base / novel / HM (mean and std over seeds).  The ``true_cf`` variant trains on
the true counterfactuals, so its audit scores are main's ``true_*`` reference columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dicap import layout
from dicap.audit.scoring import FACTORS, read_audits, summarise
from dicap.report.figures import pyplot, save_figure
from dicap.report.table import read_metrics

AUDIT_COLUMNS = ["valid", *(f"kept_{f}" for f in FACTORS), "faithful", "mse_to_true", "ssim_to_true"]
ACCURACY = ("base", "novel", "hm")


def accuracy_by_variant(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per dataset, variant and method; HM on the conflict split too."""
    keys = ["dataset", "variant", "method"]
    unbiased = metrics[metrics["split"] == "test_unbiased"].groupby(keys, sort=False)
    table = unbiased[list(ACCURACY)].mean().join(unbiased[list(ACCURACY)].std(ddof=1).add_suffix("_std"))
    conflict = metrics[metrics["split"] == "test_conflict"].groupby(keys, sort=False)["hm"].mean().rename("conflict_hm")
    return table.join(conflict).join(unbiased["seed"].count().rename("seeds")).reset_index()


def audit_by_variant(audit_files: list[Path], datasets: list[str], oracle_reports: dict[str, dict]) -> pd.DataFrame:
    summary = summarise(read_audits(audit_files, datasets), oracle_reports)
    generated = summary.assign(counterfactuals="generated")
    truth = summary[summary["variant"] == layout.MAIN].copy()
    for column in AUDIT_COLUMNS:
        truth[column] = truth[f"true_{column}"] if f"true_{column}" in truth else (0.0 if column.startswith("mse") else 1.0)
    truth = truth.assign(variant=layout.TRUE_CF, counterfactuals="true")
    return pd.concat([generated, truth], ignore_index=True)[["dataset", "variant", "guidance_scale", "sampling", "counterfactuals",
                                                                *AUDIT_COLUMNS]]


def build_ablation(metric_files: list[Path], audit_files: list[Path], datasets: list[str], oracle_reports: dict[str, dict]) -> pd.DataFrame:
    accuracy = accuracy_by_variant(read_metrics(metric_files, datasets))
    audit = audit_by_variant(audit_files, datasets, oracle_reports)
    table = accuracy.merge(audit, on=["dataset", "variant"], how="left")
    front = ["dataset", "variant", "method", "guidance_scale", "sampling", "counterfactuals"]
    return table[front + [c for c in table.columns if c not in front]].round(4)


def plot_ablation(table: pd.DataFrame, x: str, out: Path) -> None:
    """Per dataset: audit scores against the setting ``x``, then DiCap's accuracy against it.

    A numeric ``x`` (``guidance_scale``) is drawn as lines on a symlog axis; a categorical one
    (sampling strategy, which counterfactuals) as grouped bars.  CoOp's HM from the main
    run is a dashed line for reference.
    """
    plt = pyplot()
    datasets = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(len(datasets), 2, figsize=(9, 3.2 * len(datasets)), squeeze=False)
    numeric = pd.api.types.is_numeric_dtype(table[x])
    for row, dataset in zip(axes, datasets):
        rows = table[table["dataset"] == dataset]
        dicap = rows[rows["method"] == "dicap"].sort_values(x) if numeric else rows[rows["method"] == "dicap"]
        series = [
            (row[0], ["valid", *(f"kept_{f}" for f in FACTORS), "faithful"], "share of counterfactuals", (0, 1.02)),
            (row[1], ["base", "novel", "hm"], "DiCap accuracy (%)", None),
        ]
        for ax, columns, ylabel, ylim in series:
            labels = dicap[x].astype(str).tolist()
            positions = np.arange(len(labels))
            for i, column in enumerate(columns):
                err = dicap[f"{column}_std"].fillna(0) if f"{column}_std" in dicap else None
                if numeric:
                    ax.errorbar(dicap[x], dicap[column], yerr=err, marker="o", capsize=2, label=column)
                else:
                    width = 0.8 / len(columns)
                    ax.bar(positions + (i - (len(columns) - 1) / 2) * width, dicap[column], width, yerr=err, capsize=2, label=column)
            if numeric:
                ax.set_xscale("symlog", linthresh=1)
                ax.set_xlabel(x)
            else:
                ax.set_xticks(positions, labels)
            if ylim:
                ax.set_ylim(*ylim)
            elif not numeric:  # bars from zero would hide differences of a point or two
                ax.set_ylim(max(0.0, float(dicap[columns].min().min()) - 5), float(dicap[columns].max().max()) + 2)
            ax.set_ylabel(ylabel)
            ax.set_title(dataset, fontsize=9)
        coop = rows[(rows["method"] == "coop") & (rows["variant"] == layout.MAIN)]
        if not coop.empty:
            row[1].axhline(float(coop["hm"].iloc[0]), color="grey", linestyle="--", label="CoOp HM")
        row[0].legend(fontsize=6, loc="lower right")
        row[1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


# --- prompt ablations: one change to the prompt training, main's counterfactuals ---------------

Settings = dict[str, dict[str, dict[str, float]]]  # variant -> method -> the swept settings it trained with


def swept_keys(settings: Settings) -> list[str]:
    """The prompt keys an ablation sweeps: those its settings give (plan.PROMPT_ABLATION_KEYS)."""
    return list(next(iter(settings[layout.MAIN].values())))


def build_prompt_ablation(metric_files: list[Path], datasets: list[str], settings: Settings) -> pd.DataFrame:
    """Accuracy per setting and method; each row's settings are those the method trained with
    in that variant (the plan's, so a learner's own recipe counts).

    Main's metric files score every configured method: only those the ablation's own
    variants train are kept.
    """
    table = accuracy_by_variant(read_metrics(metric_files, datasets))
    table = table[table["method"].isin(set(table.loc[table["variant"] != layout.MAIN, "method"]))]
    keys = swept_keys(settings)
    for key in keys:
        table[key] = [settings[v][m][key] for v, m in zip(table["variant"], table["method"])]
    front = ["dataset", "variant", "method", *keys]
    return table[front + [c for c in table.columns if c not in front]].round(4)


def plot_prompt_ablation(table: pd.DataFrame, settings: Settings, out: Path) -> None:
    """Per dataset and swept setting: base, novel and HM of each method along the setting (log axis).

    For the loss, each sweep holds the other setting at the method's main value, so the two
    panels share main's point.
    """
    plt = pyplot()
    datasets = list(dict.fromkeys(table["dataset"]))
    keys = swept_keys(settings)
    fig, axes = plt.subplots(len(datasets), len(keys), figsize=(5 * len(keys), 3.2 * len(datasets)), squeeze=False)
    for row, dataset in zip(axes, datasets):
        for ax, key in zip(row, keys):
            rows = table[table["dataset"] == dataset]
            for other in keys:  # the other settings at each method's main value
                if other != key:
                    main = rows["method"].map(lambda m: settings[layout.MAIN][m][other])
                    rows = rows[rows[other] == main]
            for method, group in rows.groupby("method", sort=False):
                group = group.sort_values(key)
                for column, style in (("hm", "-"), ("novel", ":"), ("base", "--")):
                    ax.errorbar(group[key], group[column], yerr=group[f"{column}_std"].fillna(0), marker="o", capsize=2,
                                linestyle=style, label=f"{method} {column}")
            ax.set_xscale("log", base=2 if key == "n_ctx" else 10)
            ax.set_xlabel(key)
            ax.set_ylabel("accuracy (%)")
            ax.set_title(dataset, fontsize=9)
            ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)
