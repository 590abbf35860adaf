"""Table 1: base / novel / HM per dataset and method, mean and std over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dicap import layout
from dicap.evaluation.metrics import harmonic_mean
from dicap.io import atomic_output, provenance, read_json, read_table, write_json, write_table
from dicap.runs import describe as describe_run
from dicap.prompting.methods import ZEROSHOT
from dicap.report.markdown import markdown_table
from dicap.report.paired import GAIN, LOSS, NOISE, markdown_cells, paired_both

METRICS = ("base", "novel", "hm")
SPLIT_ORDER = {"test_unbiased": 0, "test_aligned": 1, "test_conflict": 2, "test": 3}
SPREAD_SUFFIXES = ("_std", "_se")


def read_metrics(metric_files: list[Path], datasets: list[str]) -> pd.DataFrame:
    """Per-seed metric files, each tagged with the dataset, variant and seed its path names.

    The path is the one source of truth for all three (as for the audits); a ``seed`` column
    that disagrees with it means a file was copied to the wrong place, and stops the job.
    """
    frames = []
    for path in metric_files:
        key = layout.seed_key(layout.METRICS, path, datasets)
        frames.append(read_seed_file(path, key.seed).assign(dataset=key.dataset, variant=key.variant, seed=key.seed))
    return pd.concat(frames, ignore_index=True)


def read_seed_file(path: Path, seed: int) -> pd.DataFrame:
    """One per-seed metrics file, refused when its ``seed`` column disagrees with ``seed``, the
    one its path names (a file copied to the wrong place)."""
    frame = read_table(path)
    if "seed" in frame and not (frame["seed"] == seed).all():
        raise ValueError(f"{path} holds seeds {sorted(set(frame['seed']))} but its path says seed {seed}")
    return frame


def over_seeds(group: pd.DataFrame, columns: tuple[str, ...], standard_error: bool = False) -> dict[str, Any]:
    """Each column's mean and sample std (0 for one seed) over a group of per-seed rows, and the seeds;
    with ``standard_error``, also each column's SE of the mean (std / sqrt(n)) and ``n``, the seeds counted."""
    row: dict[str, Any] = {}
    n = len(group)
    for column in columns:
        row[column] = group[column].mean()
        row[f"{column}_std"] = group[column].std(ddof=1) if n > 1 else 0.0
        if standard_error:
            row[f"{column}_se"] = row[f"{column}_std"] / np.sqrt(n)
    if standard_error:
        row["n"] = n
    row["seeds"] = " ".join(str(s) for s in sorted(group["seed"]))
    return row


def is_spread(column: str) -> bool:
    """Whether a report column describes the spread over seeds (``*_std``, ``*_se``, ``n``), not a result."""
    return column == "n" or column.endswith(SPREAD_SUFFIXES)


def build_table1(suite: str, datasets: list[str], metric_files: list[Path]) -> pd.DataFrame:
    """Table 1 of the per-seed metric files (see :func:`summarise`)."""
    return summarise(suite, datasets, read_metrics(metric_files, datasets))


def summarise(suite: str, datasets: list[str], per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per split, dataset and method, plus an average row per split and method.

    The average row is the HM of the averaged base and novel accuracies (the protocol's
    convention), not the mean of per-dataset HMs; it has no spread of its own.
    """
    method_order = {m: i for i, m in enumerate(dict.fromkeys(per_seed["method"]))}
    rows: list[dict[str, Any]] = []
    for (split, dataset, method), group in per_seed.groupby(["split", "dataset", "method"], sort=False):
        rows.append({"suite": suite, "split": split, "dataset": dataset, "method": method,
                     **over_seeds(group, METRICS, standard_error=True)})
    table = pd.DataFrame(rows)
    averages = []
    for (split, method), group in table.groupby(["split", "method"], sort=False):
        b, n = group["base"].mean(), group["novel"].mean()
        averages.append({
            "suite": suite, "split": split, "dataset": "average", "method": method,
            "base": b, "novel": n, "hm": 100 * harmonic_mean(b / 100, n / 100),
            **{f"{m}_{spread}": np.nan for m in METRICS for spread in ("std", "se")},
            "n": group["n"].iloc[0], "seeds": group["seeds"].iloc[0],
        })
    table = pd.concat([table, pd.DataFrame(averages)], ignore_index=True)
    dataset_order = {d: i for i, d in enumerate([*datasets, "average"])}
    table = table.sort_values(
        ["split", "dataset", "method"],
        key=lambda col: col.map({"split": SPLIT_ORDER, "dataset": dataset_order, "method": method_order}[col.name]),
    )
    return table.reset_index(drop=True).round(4)


def build_paired(per_seed: pd.DataFrame, datasets: list[str]) -> pd.DataFrame:
    """Table 1's paired comparisons per split and dataset: each DiCap method against its own
    learner, each learner against zero-shot (:mod:`dicap.report.paired`)."""
    return paired_both(per_seed, METRICS, ["split", "dataset"], {"split": list(SPLIT_ORDER), "dataset": datasets})


def run_line(record: dict[str, Any]) -> str:
    """The first line of a table's Markdown: which run made it, so a table copied out of its
    folder (runs/<name>/results/, docs/running.md#runs) still says what it is."""
    return (f"Run: {describe_run(record['params'].get('run', ''))} (config hash {record['config_hash']}; "
            "everything it was made from is in the .provenance.json beside this file)\n\n")


def to_markdown(table: pd.DataFrame, paired: pd.DataFrame | None = None) -> str:
    """Per split: the table (mean ± SE over seeds), then DiCap against its own learner and the
    learners against zero-shot, paired by seed."""
    lines = []
    for split, group in table.groupby("split", sort=False):
        rows = [[r["dataset"], r["method"], *(f"{r[m]:.2f}" if pd.isna(r[f"{m}_se"]) else f"{r[m]:.2f} ± {r[f'{m}_se']:.2f}"
                                              for m in METRICS)] for _, r in group.iterrows()]
        lines += [f"### {split} (suite: {group['suite'].iloc[0]}, seeds: {group['seeds'].iloc[0]})", "",
                  "Mean ± standard error over seeds (SE = std / √n; the std is in the csv).", "",
                  *markdown_table(["dataset", "method", "base", "novel", "HM"], rows), ""]
        if paired is not None:
            lines += paired_sections(paired[paired["split"] == split], split)
    return "\n".join(lines)


def paired_sections(paired: pd.DataFrame, split: str) -> list[str]:
    """The Markdown of one split's paired comparisons, DiCap's first."""
    lines = []
    titles = {"learner": ("DiCap against its own learner", "learner"), "zeroshot": ("the learners against zero-shot", "zero-shot")}
    for against, (title, name) in titles.items():
        part = paired[paired["baseline"] != ZEROSHOT] if against == "learner" else paired[paired["baseline"] == ZEROSHOT]
        if part.empty:
            continue
        rows = markdown_cells(part, METRICS, ["dataset", "method", "baseline"])
        lines += [f"#### {split}: {title}", "",
                  f"Δ = method − {name} per seed, mean ± SE [95% t interval] and the verdict: "
                  f"{GAIN} or {LOSS} when the interval excludes 0, else {NOISE}.", "",
                  *markdown_table(["dataset", "method", "baseline", "Δ base", "Δ novel", "Δ HM"], rows), ""]
    return lines


def headline_split(table: pd.DataFrame) -> str:
    """Table 1's first split: ``test_unbiased`` for the embedded suite, ``test`` for the paper's."""
    return min(table["split"].unique(), key=lambda split: SPLIT_ORDER.get(split, len(SPLIT_ORDER)))


def metrics_tree(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Table 1's headline for ``dvc metrics``: ``dataset -> method -> HM`` on its first split.

    DVC shows a metrics file as one row, a column per leaf: one file for the whole table made
    hundreds of columns nobody reads.  One file per dataset (and the average row) makes
    ``dvc metrics show`` a table, a row per dataset and a column per method, holding the number
    the paper's Table 1 compares; ``dvc metrics diff`` lists the changed methods per file.  The
    whole table (every split, base and novel, the spread) is table1.csv and table1.md.
    """
    tree: dict[str, dict[str, float]] = {}
    for r in table[table["split"] == headline_split(table)].itertuples():
        tree.setdefault(r.dataset, {})[r.method] = float(r.hm)
    return tree


def write_metrics_folder(folder: Path, tree: dict[str, dict[str, float]]) -> None:
    """``<folder>/<dataset>.json`` per dataset of ``tree``; a file left from other datasets goes."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in set(folder.glob("*.json")) - {folder / f"{dataset}.json" for dataset in tree}:
        stale.unlink()
    for dataset, methods in tree.items():
        write_json(folder / f"{dataset}.json", methods)


def write_table1(table: pd.DataFrame, out_csv: Path, out_md: Path, config: dict[str, Any], out_metrics: Path | None = None,
                 paired: pd.DataFrame | None = None, out_paired: Path | None = None) -> None:
    write_table(out_csv, table)
    if out_metrics is not None:
        write_metrics_folder(out_metrics, metrics_tree(table))
    if paired is not None and out_paired is not None:
        write_table(out_paired, paired)
    write_markdown_with_record(out_md, to_markdown(table, paired), out_csv, config)


def write_markdown_with_record(out_md: Path, markdown: str, out_csv: Path, config: dict[str, Any]) -> None:
    """A table's Markdown, headed by the run that made it, and its provenance beside the csv."""
    record = provenance(config, None) | {"seeds": config.get("seeds")}
    with atomic_output(out_md) as tmp:
        tmp.write_text(run_line(record) + markdown)
    write_json(out_csv.with_suffix(".provenance.json"), record)


LINEAR_PROBE = "linear_probe"  # the CLIP report's linear-probe accuracy, where the backbone job measures one


def build_backbone_report(
    datasets: list[str], clip_reports: list[Path], diffusion_reports: list[Path], cf_tables: list[Path], out: Path,
    diffusion_checks: list[Path] | None = None,
) -> None:
    """What the backbones and the generator achieved, per dataset (measured, never typed in).

    A ``linear_probe`` column is added when a CLIP report holds one (a number, or a mapping with
    ``accuracy``): the calibration report reads it from here.
    The guide's own posterior (``guide_prediction``, ``guide_confidence``) is left out: the
    sampler optimised exactly that score, so it says nothing of the counterfactuals' quality
    (the audit's independent oracle does).  ``diffusion_checks`` (embedded suite) add how
    well the oracle reads each class the diffusion model draws (:func:`diffusion_check_columns`).
    """
    clip = layout.by_dataset(layout.CLIP_REPORT, clip_reports, datasets)
    diffusion = layout.by_dataset(layout.DIFFUSION_REPORT, diffusion_reports, datasets)
    checks = layout.by_dataset(layout.DIFFUSION_CHECK, diffusion_checks, datasets) if diffusion_checks else {}
    rows = []
    for dataset in datasets:
        tables = [p for p in cf_tables if layout.parse(layout.CF_TABLE, p)["dataset"] == dataset]
        cf = pd.concat([read_table(p) for p in tables], ignore_index=True)
        clip_report = read_json(clip[dataset])
        probe = clip_report.get(LINEAR_PROBE)
        rows.append({
            "dataset": dataset,
            "clip_zero_shot_accuracy": clip_report["zero_shot_accuracy"],
            **({LINEAR_PROBE: probe.get("accuracy") if isinstance(probe, dict) else probe} if probe is not None else {}),
            "diffusion_final_loss": read_json(diffusion[dataset])["final_loss"],
            # NaN rows were not sampled (counterfactual.reconstruction_fraction): the mean of the measured ones
            "inversion_reconstruction_mse": cf["reconstruction_mse"].mean(skipna=True),
            "counterfactuals": len(cf),
            **(diffusion_check_columns(read_json(checks[dataset])) if dataset in checks else {}),
        })
    write_table(out, pd.DataFrame(rows).round(4))


def diffusion_check_columns(check: dict[str, Any]) -> dict[str, float]:
    """A diffusion_check report as columns: the least and mean class read at s = 1 (the model
    alone, no guidance) and at the counterfactuals' guidance scale (``_guided``: the check's
    threshold applies there), then each class's read at that scale."""
    from dicap.audit.diffusion_check import CHECKED_SCALE

    def reads(scale: float) -> dict[str, float]:
        return check["reads"][f"{scale:g}"]

    alone, guided = reads(CHECKED_SCALE), reads(check["guidance_scale"])
    return {
        "diffusion_class_read_min": min(alone.values()), "diffusion_class_read_mean": float(np.mean(list(alone.values()))),
        "diffusion_class_read_guided_min": min(guided.values()),
        "diffusion_class_read_guided_mean": float(np.mean(list(guided.values()))),
        **{f"diffusion_class_read_{c}": r for c, r in guided.items()},
    }
