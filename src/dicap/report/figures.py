"""Figures for people: method bars and counterfactual grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dicap.data.store import DatasetStore
from dicap.io import atomic_output, load_arrays


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> None:
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png", metadata={"Software": None})


def plot_table1(table_csv: Path, out: Path) -> None:
    """Base / novel / HM bars per method, one panel per dataset and test split."""
    plt = _pyplot()
    table = pd.read_csv(table_csv)
    panels = list(table.groupby(["split", "dataset"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), sharey=True, squeeze=False)
    for ax, ((split, dataset), group) in zip(axes[0], panels):
        methods = list(group["method"])
        x = np.arange(len(methods))
        for i, metric in enumerate(("base", "novel", "hm")):
            err = group[f"{metric}_std"].fillna(0).to_numpy()
            ax.bar(x + (i - 1) * 0.27, group[metric], 0.27, yerr=err, label=metric, capsize=2)
        ax.set_xticks(x, methods, rotation=30)
        ax.set_title(f"{dataset}\n{split}", fontsize=9)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)


def plot_counterfactual_grid(dataset_dir: Path, split_file: Path, images: Path, table: Path, out: Path, n: int = 10) -> None:
    """Columns of factual | generated counterfactual | true counterfactual, with class names."""
    plt = _pyplot()
    store = DatasetStore.open(dataset_dir)
    split = pd.read_parquet(split_file)
    rows = pd.read_parquet(table)
    arrays = load_arrays(images)
    pick = np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int)
    factual = store.pixels(split.iloc[rows["row"].to_numpy()[pick]])
    grid = [("factual", factual), ("generated", arrays["images"][pick])]
    if "true_images" in arrays:
        grid.append(("true cf", arrays["true_images"][pick]))
    fig, axes = plt.subplots(len(grid), len(pick), figsize=(1.1 * len(pick), 1.25 * len(grid)), squeeze=False)
    for r, (name, imgs) in enumerate(grid):
        for c, i in enumerate(pick):
            ax = axes[r][c]
            ax.imshow(imgs[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(store.classes[rows["y"].iloc[i]], fontsize=7)
            elif r == 1:
                ax.set_title(f"→ {store.classes[rows['y_cf'].iloc[i]]}", fontsize=7)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)
