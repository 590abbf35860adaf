"""Tables 2 (retrieval) and 3 (VQA): every score per dataset and method, mean and std over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from dicap import layout
from dicap.io import write_table
from dicap.report.markdown import markdown_table
from dicap.report.table import over_seeds, read_seed_file, write_markdown_with_record

# Columns the markdown shows (the CSV keeps every score): CPL's headline number first.
SHOWN = {
    "retrieval": {"i2t_r1": "I→T R@1", "i2t_r5": "I→T R@5", "i2t_r10": "I→T R@10", "t2i_r1": "T→I R@1",
                  "t2i_r5": "T→I R@5", "t2i_r10": "T→I R@10", "base_i2t_r1": "base I→T R@1", "novel_i2t_r1": "novel I→T R@1"},
    "vqa": {"vqa_accuracy": "VQA acc.", "top1": "top-1", "object_accuracy": "object", "colour_accuracy": "colour",
            "background_accuracy": "background", "place_accuracy": "place", "size_accuracy": "size",
            "yes/no_accuracy": "yes/no", "number_accuracy": "number", "other_accuracy": "other",
            "base_accuracy": "base", "novel_accuracy": "novel"},
}
TITLES = {"retrieval": "Table 2: image-text retrieval", "vqa": "Table 3: visual question answering"}


def read_task_metrics(task: str, metric_files: list[Path], datasets: list[str]) -> pd.DataFrame:
    """Per-seed metric files of ``task``, tagged with the dataset and seed their paths name."""
    frames = []
    for path in metric_files:
        found = layout.parse(layout.TASK_METRICS, path)
        if found["task"] != task or found["dataset"] not in datasets:
            raise ValueError(f"{path} is not a {task} metrics file of datasets {datasets}")
        seed = int(found["seed"])
        frames.append(read_seed_file(path, seed).assign(dataset=found["dataset"], seed=seed))
    return pd.concat(frames, ignore_index=True)


def build_task_table(task: str, suite: str, datasets: list[str], metric_files: list[Path]) -> pd.DataFrame:
    """One row per dataset and method (in the files' method order), every score's mean and std."""
    per_seed = read_task_metrics(task, metric_files, datasets)
    scores = tuple(c for c in per_seed.columns if c not in ("method", "seed", "split", "dataset"))
    order = {m: i for i, m in enumerate(dict.fromkeys(per_seed["method"]))}
    rows = [{"suite": suite, "task": task, "dataset": dataset, "method": method, "split": group["split"].iloc[0],
             **over_seeds(group, scores)}
            for (dataset, method), group in per_seed.groupby(["dataset", "method"], sort=False)]
    table = pd.DataFrame(rows)
    table = table.sort_values(["dataset", "method"], key=lambda c: c.map({d: i for i, d in enumerate(datasets)} if c.name == "dataset" else order))
    return table.reset_index(drop=True).round(4)


def task_markdown(task: str, table: pd.DataFrame) -> str:
    shown = {k: v for k, v in SHOWN[task].items() if k in table}
    lines = [f"## {TITLES[task]} (suite: {table['suite'].iloc[0]}, seeds: {table['seeds'].iloc[0]}, "
             f"test split: {table['split'].iloc[0]})", ""]
    rows = [[r["dataset"], r["method"], *(f"{r[c]:.2f} ± {r[f'{c}_std']:.2f}" for c in shown)] for _, r in table.iterrows()]
    return "\n".join([*lines, *markdown_table(["dataset", "method", *shown.values()], rows), ""])


def write_task_table(task: str, table: pd.DataFrame, out_csv: Path, out_md: Path, config: dict[str, Any]) -> None:
    write_table(out_csv, table)
    write_markdown_with_record(out_md, task_markdown(task, table), out_csv, config)
