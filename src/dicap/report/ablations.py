"""Ablation tables and figures: counterfactual quality and DiCap accuracy per setting.

One table shape serves every ablation: a row per dataset, variant and method with the
variant's settings (``guidance_scale``, ``sampling``, which counterfactuals), its audit scores and the
method's base / novel / HM (mean and std over seeds).  The ``true_cf`` variant trains on
the true counterfactuals, so its audit scores are main's ``true_*`` reference columns.
Every ablation trains DiCap's three readings on CoOp (``dicap``, the paper's hard negative;
``dicap_pos``; ``dicap_label``: prompting/methods.py), and the figures draw each one present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dicap import layout
from dicap.audit.scoring import FACTORS, read_audits, summarise
from dicap.prompting.methods import READINGS
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
    """Per dataset: audit scores against the setting ``x``, then each DiCap reading's HM on the
    unbiased and on the conflict split against it.

    A numeric ``x`` (``guidance_scale``) is drawn as lines on a symlog axis; a categorical one
    (sampling strategy, which counterfactuals) as grouped bars.  The audit scores are the
    variant's, the same for every reading.  CoOp's HM from the main run is a dashed line for
    reference.
    """
    plt = pyplot()
    datasets = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(len(datasets), 2, figsize=(9, 3.2 * len(datasets)), squeeze=False)
    numeric = pd.api.types.is_numeric_dtype(table[x])
    for row, dataset in zip(axes, datasets):
        rows = table[table["dataset"] == dataset]
        readings = rows[rows["method"].isin(list(READINGS))]
        readings = readings.sort_values(x, kind="stable") if numeric else readings
        # the audit once per variant (every reading shares it), the accuracy once per reading
        audit = readings.drop_duplicates("variant")
        accuracy = [(f"{m} {c}", readings[readings["method"] == m], c) for m in READINGS if m in set(readings["method"])
                    for c in ("hm", "conflict_hm") if readings[c].notna().any()]
        series = [
            (row[0], [(c, audit, c) for c in ["valid", *(f"kept_{f}" for f in FACTORS), "faithful"]],
             "share of counterfactuals", (0, 1.02)),
            (row[1], accuracy, "DiCap HM (%): unbiased, conflict", None),
        ]
        for ax, columns, ylabel, ylim in series:
            labels = audit[x].astype(str).tolist()
            positions = np.arange(len(labels))
            for i, (name, frame, column) in enumerate(columns):
                err = frame[f"{column}_std"].fillna(0) if f"{column}_std" in frame else None
                if numeric:
                    ax.errorbar(frame[x], frame[column], yerr=err, marker="o", capsize=2, label=name)
                else:
                    width = 0.8 / len(columns)
                    at = positions[[labels.index(v) for v in frame[x].astype(str)]]
                    ax.bar(at + (i - (len(columns) - 1) / 2) * width, frame[column], width, yerr=err, capsize=2, label=name)
            if numeric:
                ax.set_xscale("symlog", linthresh=1)
                ax.set_xlabel(x)
            else:
                ax.set_xticks(positions, labels)
            if ylim:
                ax.set_ylim(*ylim)
            elif not numeric and columns:  # bars from zero would hide differences of a point or two
                values = pd.concat([frame[column] for _, frame, column in columns])
                ax.set_ylim(max(0.0, float(values.min()) - 5), float(values.max()) + 2)
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

    For the loss, each sweep holds the other settings at the method's main value, so the
    panels share main's point; a method the ablation does not train along a setting (the
    hard negative's weight for ``dicap_label``, the labelled counterfactual's for ``dicap``)
    is left out of that setting's panel.
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
                if not any(key in layout.parse_variant(v).prompt_overrides for v in group["variant"]):
                    continue  # only main's point: this method is not swept along key
                group = group.sort_values(key)
                for column, style in (("hm", "-"), ("novel", ":"), ("base", "--")):
                    ax.errorbar(group[key], group[column], yerr=group[f"{column}_std"].fillna(0), marker="o", capsize=2,
                                linestyle=style, label=f"{method} {column}")
            ax.set_xscale("log", base=2 if key == "n_ctx" else 10)
            ax.set_xlabel(key)
            ax.set_ylabel("accuracy (%)")
            ax.set_title(dataset, fontsize=9)
            if ax.get_legend_handles_labels()[0]:  # a panel no method is swept along stays empty
                ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)
