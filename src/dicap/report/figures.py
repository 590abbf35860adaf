"""Figures for people: method bars and counterfactual grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dicap.counterfactual.shards import GENERATED, TRUE, UNGUIDED
from dicap.data.store import DatasetStore
from dicap.io import atomic_output, load_arrays


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: Path) -> None:
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png", metadata={"Software": None})


def plot_table1(table_csv: Path, out: Path) -> None:
    """Base / novel / HM bars per method: a row of panels per test split, a column per dataset.

    Panels widen with the number of methods, so a dozen method names stay legible.
    """
    plt = pyplot()
    table = pd.read_csv(table_csv)
    splits, datasets = list(dict.fromkeys(table["split"])), list(dict.fromkeys(table["dataset"]))
    width = 1.0 + 0.4 * table["method"].nunique()
    fig, axes = plt.subplots(len(splits), len(datasets), figsize=(width * len(datasets), 3.4 * len(splits)),
                             sharey=True, squeeze=False)
    for row, split in zip(axes, splits):
        for ax, dataset in zip(row, datasets):
            group = table[(table["split"] == split) & (table["dataset"] == dataset)]
            methods = list(group["method"])
            x = np.arange(len(methods))
            for i, metric in enumerate(("base", "novel", "hm")):
                err = group[f"{metric}_std"].fillna(0).to_numpy()
                ax.bar(x + (i - 1) * 0.27, group[metric], 0.27, yerr=err, label=metric, capsize=2)
            ax.set_xticks(x, methods, rotation=60, ha="right", fontsize=8)
            ax.set_title(f"{dataset}, {split}", fontsize=9)
        row[0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
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
    split = pd.read_parquet(split_file)
    runs = [(load_arrays(i), pd.read_parquet(a)) for i, a in zip(images, audits)]
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
