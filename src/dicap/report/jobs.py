"""The report stage's jobs (rules/report.smk, rules/ablations.smk): each function is the rule
of the same name; ``record_reference`` and ``readme_results`` are the maintainer's commands
that move the reference numbers (docs/reproduction.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

log = logging.getLogger(__name__)

__all__ = [
    "table1", "task_table", "figure_table1", "figure_counterfactuals", "backbone_report", "shortcut", "cost_report", "reproduction",
    "ablation_guidance_scale", "ablation_sampling", "ablation_true_cf", "ablation_context", "ablation_loss",
    "record_reference", "readme_results",
]


def table1(
    suite: str,
    datasets: list[str],
    metrics: Annotated[list[Path], "evaluate's per-seed files of the main variant"],
    config_json: Annotated[dict[str, Any], "the whole config, for the provenance record"],
    out_csv: Path,
    out_md: Path,
    out_metrics: Annotated[Path | None, "the same numbers as nested JSON, for dvc metrics"] = None,
) -> None:
    """Aggregate per-seed metrics into Table 1 (mean and std over seeds, average row)."""
    from dicap.report.table import build_table1, write_table1

    write_table1(build_table1(suite, datasets, metrics), out_csv, out_md, config_json, out_metrics)


def task_table(
    task: Annotated[str, "retrieval (Table 2) or vqa (Table 3)"],
    suite: str,
    datasets: list[str],
    metrics: Annotated[list[Path], "evaluate_task's per-seed files of the task"],
    config_json: Annotated[dict[str, Any], "the whole config, for the provenance record"],
    out_csv: Path,
    out_md: Path,
) -> None:
    """Aggregate per-seed retrieval or VQA scores into Table 2 or 3 (mean and std over seeds)."""
    from dicap.data.text_tasks import check_task
    from dicap.report.text_tables import build_task_table, write_task_table

    write_task_table(check_task(task), build_task_table(task, suite, datasets, metrics), out_csv, out_md, config_json)


def figure_table1(table: Path, out: Path) -> None:
    """Plot base / novel / HM bars per method from Table 1."""
    from dicap.report.figures import plot_table1

    plot_table1(table, out)


def figure_counterfactuals(
    dataset_dir: Path,
    split: Path,
    images: Annotated[list[Path], "merged counterfactuals, main run first, then other guidance scales"],
    audits: Annotated[list[Path], "their per-image audits, in the same order"],
    out: Path,
) -> None:
    """Plot factual | counterfactuals at several s | true counterfactual, with the oracle's verdicts."""
    from dicap.report.figures import plot_counterfactual_grid

    if len(images) != len(audits):
        raise ValueError(f"{len(images)} counterfactual files but {len(audits)} audits")
    plot_counterfactual_grid(dataset_dir, split, images, audits, out)


def backbone_report(
    datasets: list[str], clip_reports: list[Path], diffusion_reports: list[Path], cf_tables: list[Path], out: Path
) -> None:
    """Summarise what the backbones and the generator achieved, per dataset."""
    from dicap.report.table import build_backbone_report

    build_backbone_report(datasets, clip_reports, diffusion_reports, cf_tables, out)


def shortcut(
    datasets: list[str],
    metrics: Annotated[list[Path], "evaluate's per-seed files: every dataset's main run, then the controls'"],
    out_csv: Path,
    out_md: Path,
    out_png: Path,
) -> None:
    """Aligned, conflict, gap, worst-group and novel accuracy per method and control (embedded suite)."""
    from dicap.report.shortcut import build_shortcut, write_shortcut

    write_shortcut(build_shortcut(metrics, datasets), out_csv, out_md, out_png)


def cost_report(
    suite: str,
    benchmarks: Annotated[Path, "the folder of the rules' benchmark files"],
    out: Path,
    warm: Annotated[bool, "the jobs ran in the warm worker: their benchmark files saw the client, not the job"] = False,
) -> None:
    """Summarise the rules' benchmark files: wall time and peak memory per rule.

    A job run by the warm worker (dicap.worker) is a forked child of the worker, which
    Snakemake's ``benchmark:`` does not see: its memory is left blank rather than reported as
    the few MB of the client.  ``DICAP_WARM=0`` measures it.
    """
    from dicap.io import write_table
    from dicap.report.cost import cost_table, read_benchmarks

    jobs = read_benchmarks(benchmarks)
    if warm:
        jobs["max_rss_mb"] = float("nan")
        log.info("peak memory not measured: the jobs ran in the warm worker (DICAP_WARM=0 measures it)")
    write_table(out, cost_table(jobs, suite))


def reproduction(
    table1: Path,
    out_csv: Path,
    out_md: Path,
    backbones: Path | None = None,
    audit: Annotated[Path | None, "results/counterfactual_audit.csv (embedded suite only)"] = None,
    shortcut: Annotated[Path | None, "results/shortcut.csv (embedded suite only)"] = None,
    table2: Annotated[Path | None, "results/table2.csv, retrieval (embedded suite only)"] = None,
    table3: Annotated[Path | None, "results/table3.csv, VQA (embedded suite only)"] = None,
    reference: Annotated[Path | None, "results/reference/<suite>.csv, if one exists"] = None,
) -> None:
    """Compare every regenerated number with the reference: results/reproduction.{csv,md}."""
    from dicap.report.reproduction import compare, read_reference, regenerated_numbers, write_reproduction

    known, info = read_reference(reference) if reference else (None, None)
    frame = compare(regenerated_numbers(table1, backbones, audit, shortcut, _tasks(table2, table3)), known)
    write_reproduction(frame, out_csv, out_md, info)
    log.info("%d of %d numbers within tolerance", (frame["within"] == "yes").sum(), len(frame))


def _ablation(x: str, datasets: list[str], metrics: list[Path], audits: list[Path], oracle_reports: list[Path],
              out_csv: Path, out_png: Path) -> None:
    """One ablation's table (audit scores and accuracy per setting) and its figure along ``x``."""
    from dicap.audit.scoring import read_oracle_reports
    from dicap.io import write_table
    from dicap.report.ablations import build_ablation, plot_ablation

    table = build_ablation(metrics, audits, datasets, read_oracle_reports(oracle_reports, datasets))
    write_table(out_csv, table)
    plot_ablation(table, x, out_png)


def ablation_guidance_scale(
    datasets: list[str], metrics: list[Path], audits: list[Path], oracle_reports: list[Path], out_csv: Path, out_png: Path
) -> None:
    """Audit scores and DiCap's accuracy against the guidance scale s."""
    _ablation("s", datasets, metrics, audits, oracle_reports, out_csv, out_png)


def ablation_sampling(
    datasets: list[str], metrics: list[Path], audits: list[Path], oracle_reports: list[Path], out_csv: Path, out_png: Path
) -> None:
    """Audit scores and DiCap's accuracy per way of choosing y_cf."""
    _ablation("sampling", datasets, metrics, audits, oracle_reports, out_csv, out_png)


def ablation_true_cf(
    datasets: list[str], metrics: list[Path], audits: list[Path], oracle_reports: list[Path], out_csv: Path, out_png: Path
) -> None:
    """DiCap trained on the generated counterfactuals against DiCap trained on the true ones."""
    _ablation("counterfactuals", datasets, metrics, audits, oracle_reports, out_csv, out_png)


def _prompt_ablation(ablation: str, datasets: list[str], metrics: list[Path], main: dict[str, Any], out_csv: Path,
                     out_png: Path) -> None:
    from dicap.io import write_table
    from dicap.report.ablations import build_prompt_ablation, plot_prompt_ablation

    table = build_prompt_ablation(metrics, datasets, ablation, main)
    write_table(out_csv, table)
    plot_prompt_ablation(table, ablation, main, out_png)


def ablation_context(datasets: list[str], metrics: list[Path], main: Annotated[dict[str, Any], "config's prompt settings"],
                     out_csv: Path, out_png: Path) -> None:
    """CoOp's and DiCap's accuracy against the context length (random initial context for every length)."""
    _prompt_ablation("context", datasets, metrics, main, out_csv, out_png)


def ablation_loss(datasets: list[str], metrics: list[Path], main: Annotated[dict[str, Any], "config's prompt settings"],
                  out_csv: Path, out_png: Path) -> None:
    """dicap's and dicap_pos' accuracy against the counterfactual loss weight and temperature."""
    _prompt_ablation("loss", datasets, metrics, main, out_csv, out_png)


def record_reference(table1: Path, out: Path, backbones: Path | None = None, audit: Path | None = None,
                     shortcut: Path | None = None, table2: Path | None = None, table3: Path | None = None) -> None:
    """Freeze this run's numbers (and this machine) as the reference later runs compare with."""
    from dicap.report.reproduction import record_reference as record
    from dicap.report.reproduction import regenerated_numbers

    record(regenerated_numbers(table1, backbones, audit, shortcut, _tasks(table2, table3)), out,
           table1.with_suffix(".provenance.json"))


def _tasks(table2: Path | None, table3: Path | None) -> dict[str, Path]:
    return {name: path for name, path in (("table2", table2), ("table3", table3)) if path is not None}


def readme_results(
    reference: Path = Path("results/reference/embedded.csv"), out: Path = Path("results/reference/embedded.md"),
    check: Annotated[bool, "fail if the tables differ from the reference instead of writing them"] = False,
) -> None:
    """Write the reference tables (results/reference/embedded.md) from the reference file."""
    from dicap.report.readme import results_section, write_tables

    if not write_tables(out, results_section(reference), check=check):
        raise ValueError(f"{out} differs from {reference}: run dicap readme_results")
