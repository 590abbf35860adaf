"""The transfer tables: ``results/domain_generalization.{csv,md}`` and ``results/cross_dataset.{csv,md}``.

Both read :func:`dicap.evaluation.prompts.score_transfer`'s per-seed files, one per (source
dataset, variant, target, seed), and report accuracy among all of each domain's classes: a
target dataset (paper suite: ImageNet-V2, -Sketch, -A, -R; the ten other datasets) or a shift
of the embedded renders (unseen backgrounds, object colours, a style, noise), beside the
source's own domain (the source dataset, or the same objects unshifted).  ``average`` is the
mean over the target domains per seed, then over seeds: with every domain present on every
seed, the mean of the target columns, as CoCoOp's and MaPLe's tables compute it.

DiCap's claim here is invariance to the non-causal factors, so every DiCap run is judged
against its own learner, paired by seed (:mod:`dicap.report.paired`), per domain: the
true-counterfactual runs (``true_cf``) are the positive control, paired with main's learner.
The sentences under the table say on which domains a run beats its learner by more than two
standard errors of the paired difference, computed here from the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from dicap import layout
from dicap.data.shifts import UNSHIFTED
from dicap.prompting.methods import ZEROSHOT
from dicap.report.markdown import markdown_table
from dicap.report.paired import as_paired, markdown_cells, paired_both
from dicap.report.table import over_seeds, read_seed_file, write_markdown_with_record

AVERAGE = "average"
METRIC = "accuracy"
TWO_SE = 2  # the README's bar: a gain larger than this many standard errors of the paired difference
TITLES = {"domain_generalization": "Domain generalization", "cross_dataset": "Cross-dataset transfer"}
KEYS = ["dataset", "variant", "method"]


def read_transfer(metric_files: list[Path]) -> pd.DataFrame:
    """Per-seed transfer rows tagged with the source dataset, variant and target their path
    names, and an ``average`` domain per run and seed (the mean over its target domains)."""
    frames = []
    for path in metric_files:
        key = layout.parse(layout.TRANSFER_METRICS, path)
        seed = int(key["seed"])
        frame = read_seed_file(path, seed).assign(dataset=key["dataset"], variant=key["variant"], seed=seed)
        if not (frame["target"] == key["target"]).all():
            raise ValueError(f"{path} holds targets {sorted(set(frame['target']))} but its path says {key['target']!r}")
        frames.append(frame)
    if not frames:
        raise ValueError("no transfer metrics to tabulate")
    rows = pd.concat(frames, ignore_index=True)[[*KEYS, "seed", "domain", METRIC]]
    targets = rows[~is_source(rows["domain"], rows["dataset"])]
    average = targets.groupby([*KEYS, "seed"], sort=False)[METRIC].mean().reset_index().assign(domain=AVERAGE)
    return pd.concat([rows, average], ignore_index=True)


def is_source(domain: pd.Series, dataset: pd.Series) -> pd.Series:
    """Which rows are the source's own domain, which the average leaves out: the source dataset
    itself (paper suite) or its unshifted renders (embedded suite)."""
    return (domain == dataset) | (domain == UNSHIFTED)


def build_transfer(per_seed: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, paired): mean, std and SE over seeds per run and domain; every DiCap run
    against its own learner and every learner against zero-shot, per domain, paired by seed."""
    rows = [{**dict(zip([*KEYS, "domain"], key)), **over_seeds(group, (METRIC,), standard_error=True)}
            for key, group in per_seed.groupby([*KEYS, "domain"], sort=False)]
    summary = pd.DataFrame(rows).round(4)
    domains = list(dict.fromkeys(per_seed["domain"]))
    paired = paired_both(per_seed, [METRIC], ["dataset", "domain"],
                         {"dataset": list(dict.fromkeys(per_seed["dataset"])), "domain": domains})
    return summary, paired


def run_name(variant: str, method: str) -> str:
    """How a table names a run: its method, and its variant where that is not the suite's own
    prompts (main's, or the paper suite's all_classes): the positive control's ``true_cf``."""
    return method if variant in (layout.MAIN, layout.ALL_CLASSES) else f"{method} ({variant})"


def accuracy_rows(summary: pd.DataFrame, dataset: str) -> tuple[list[str], list[list[str]]]:
    """One dataset's Markdown table: a row per run, a column per domain, ``mean ± SE``."""
    part = summary[summary["dataset"] == dataset]
    domains = list(dict.fromkeys(part["domain"]))
    rows = []
    for (variant, method), group in part.groupby(["variant", "method"], sort=False):
        cells = {r["domain"]: f"{r[METRIC]:.2f} ± {r[f'{METRIC}_se']:.2f}" for _, r in group.iterrows()}
        rows.append([run_name(variant, method), *(cells.get(d, "") for d in domains)])
    return ["method", *domains], rows


def ahead_by_two_se(delta: pd.Series, se: pd.Series, n: pd.Series) -> pd.Series:
    """Which paired differences are gains beyond :data:`TWO_SE` standard errors (a single seed has none)."""
    return (n > 1) & (delta > TWO_SE * se)


def beyond_two_se(paired: pd.DataFrame) -> list[str]:
    """Per source dataset and DiCap run: the domains where it beats its own learner by more
    than :data:`TWO_SE` standard errors of the paired difference, and those where it does not."""
    lines = []
    targets = (paired["domain"] != AVERAGE) & ~is_source(paired["domain"], paired["dataset"])
    part = paired[(paired["baseline"] != ZEROSHOT) & targets]
    for (dataset, variant, method), group in part.groupby(["dataset", "variant", "method"], sort=False):
        beyond = ahead_by_two_se(group["delta"], group["se"], group["n"])
        ahead = [r for _, r in group[beyond].iterrows()]
        rest = list(group.loc[~beyond, "domain"])
        won = ", ".join(f"{r['domain']} ({as_paired(r).delta:+.2f} ± {r['se']:.2f})" for r in ahead) or "no domain"
        lines.append(f"- **{dataset}, {run_name(variant, method)}** against {group['baseline'].iloc[0]}: beyond "
                     f"{TWO_SE} SE on {won}; not on {', '.join(rest) or 'any other'}.")
    return lines


def to_markdown(table: str, summary: pd.DataFrame, paired: pd.DataFrame) -> str:
    seeds = summary["seeds"].iloc[0] if len(summary) else ""
    lines = [f"# {TITLES[table]}", "",
             f"Accuracy (%) among all of each domain's classes, mean ± standard error over seeds ({seeds}); "
             f"`{AVERAGE}` is the mean over the target domains, the source's own ({UNSHIFTED} renders, or the source "
             "dataset) left out.  Prompts are scored unchanged where they did not learn "
             "(docs/method.md#transfer).", ""]
    for dataset in dict.fromkeys(summary["dataset"]):
        header, rows = accuracy_rows(summary, dataset)
        lines += [f"## Learned on {dataset}", "", *markdown_table(header, rows), ""]
        part = paired[paired["dataset"] == dataset]
        domains = list(dict.fromkeys(part["domain"]))
        for against, title in ((False, "DiCap against its own learner"), (True, "the learners against zero-shot")):
            rows_of = part[(part["baseline"] == ZEROSHOT) == against]
            if rows_of.empty:
                continue
            wide = rows_of.assign(run=[run_name(v, m) for v, m in zip(rows_of["variant"], rows_of["method"])],
                                  metric=rows_of["domain"])
            cells = markdown_cells(wide, domains, ["run", "baseline"])
            lines += [f"### {dataset}: {title}", "",
                      "Δ = run − baseline per seed, mean ± SE [95% t interval] and the verdict.", "",
                      *markdown_table(["run", "baseline", *(f"Δ {d}" for d in domains)], cells), ""]
    lines += ["## Beyond two standard errors", "", *(beyond_two_se(paired) or ["- no DiCap run in this table"]), ""]
    return "\n".join(lines)


def paired_path(out_csv: Path) -> Path:
    """The paired comparisons beside a transfer table: ``<table>_paired.csv``, as Table 1's."""
    return out_csv.with_name(f"{out_csv.stem}_paired.csv")


def write_transfer(table: str, summary: pd.DataFrame, paired: pd.DataFrame, out_csv: Path, out_md: Path,
                   config: dict[str, Any]) -> None:
    """The table (csv and Markdown with its run line and provenance) and, beside it, its paired
    comparisons with the std of the per-seed differences (``delta_std``), which the
    reproduction report sizes their tolerance by."""
    from dicap.io import write_table

    write_table(out_csv, summary)
    write_table(paired_path(out_csv), paired.assign(delta_std=(paired["se"] * paired["n"] ** 0.5).round(4)))
    write_markdown_with_record(out_md, to_markdown(table, summary, paired), out_csv, config)
