"""Jobs of rules/report.smk: Table 1, the backbone report, the shortcut table, the calibration, figures
(the generator curve's too), cost, reproduction.

Each function is the rule of the same name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

log = logging.getLogger(__name__)

__all__ = ["table1", "figure_table1", "figure_counterfactuals", "figure_generator_curve", "backbone_report", "shortcut",
           "calibration", "cost_report", "reproduction"]


def table1(
    suite: str,
    datasets: list[str],
    metrics: Annotated[list[Path], "evaluate's per-seed files of the main variant"],
    config_json: Annotated[dict[str, Any], "the whole config, for the provenance record"],
    out_csv: Path,
    out_md: Path,
    out_metrics: Annotated[Path | None, "a folder for dvc metrics: <dataset>.json, method -> HM on the first split"] = None,
    out_paired: Annotated[Path | None, "DiCap against its own learner and the learners against zero-shot, paired by seed"] = None,
) -> None:
    """Aggregate per-seed metrics into Table 1 (mean, std and SE over seeds, average row) and its paired comparisons."""
    from dicap.report.table import build_paired, read_metrics, summarise, write_table1

    per_seed = read_metrics(metrics, datasets)
    write_table1(summarise(suite, datasets, per_seed), out_csv, out_md, config_json, out_metrics, build_paired(per_seed, datasets), out_paired)


def figure_table1(paired: Annotated[Path, "results/table1_paired.csv"], out: Path) -> None:
    """Plot each learner's HM against zero-shot and each DiCap variant's against its learner, paired, with SE bars."""
    from dicap.report.figures import plot_table1

    plot_table1(paired, out)


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


def figure_generator_curve(
    datasets: list[str],
    curves: Annotated[list[Path], "generator_curve's file of each dataset"],
    guidance_scale: Annotated[float, "counterfactual.guidance_scale: the default, starred"],
    inversion_depth: Annotated[float, "counterfactual.inversion_depth: the default, starred"],
    out: Path,
) -> None:
    """Plot validity, faithfulness and the CLIP cosine to the truth over guidance scale, one line per depth."""
    from dicap import layout
    from dicap.plan import GENERATOR_CURVE
    from dicap.report.figures import plot_generator_curve

    found = layout.by_dataset(GENERATOR_CURVE, curves, datasets)
    plot_generator_curve({d: found[d] for d in datasets}, guidance_scale, inversion_depth, out)


def backbone_report(
    datasets: list[str], clip_reports: list[Path], diffusion_reports: list[Path], cf_tables: list[Path], out: Path,
    diffusion_checks: Annotated[list[Path] | None, "diffusion_check's report of each dataset (embedded suite)"] = None,
) -> None:
    """Summarise what the backbones and the generator achieved, per dataset."""
    from dicap.report.table import build_backbone_report

    build_backbone_report(datasets, clip_reports, diffusion_reports, cf_tables, out, diffusion_checks)


def shortcut(
    datasets: list[str],
    metrics: Annotated[list[Path], "evaluate's per-seed files: every dataset's main run, then the controls'"],
    out_csv: Path,
    out_md: Path,
    out_png: Path,
    factor: Annotated[str, "data.spurious_factor: what the paired renders vary (named in the headings)"] = "background",
) -> None:
    """Aligned, conflict, gap, worst-group and novel accuracy per method and control (embedded suite),
    with DiCap against its own learner, the controls' verdicts and the dose-response."""
    from dicap.report.shortcut import build_paired, read_seeds, summarise, write_shortcut

    seeds = read_seeds(metrics, datasets)
    write_shortcut(summarise(seeds, datasets), build_paired(seeds, datasets), out_csv, out_md, out_png, factor)


def calibration(
    datasets: list[str],
    metrics: Annotated[list[Path], "evaluate's per-seed files: every dataset's main run, then the controls'"],
    out_csv: Path,
    out_md: Path,
    backbones: Annotated[Path | None, "results/backbones.csv, for the linear probe where it was measured"] = None,
) -> None:
    """Check the embedded suite against the real benchmark's known behaviour: results/calibration.{csv,md}."""
    from dicap.report.calibration import build_calibration, write_calibration

    checks, dicap = build_calibration(metrics, datasets, backbones)
    write_calibration(checks, dicap, out_csv, out_md)
    log.info("%d of %d judged checks pass", (checks["verdict"] == "pass").sum(), checks["verdict"].isin(["pass", "fail"]).sum())


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
    domain_generalization: Annotated[Path | None, "results/domain_generalization.csv, where the run made it"] = None,
    cross_dataset: Annotated[Path | None, "results/cross_dataset.csv, where the run made it"] = None,
    reference: Annotated[Path | None, "results/reference/<suite>.csv, if one exists"] = None,
) -> None:
    """Compare every regenerated number with the reference: results/reproduction.{csv,md}."""
    from dicap.report.reproduction import compare, named_tables, read_reference, regenerated_numbers, write_reproduction

    known, info = read_reference(reference) if reference else (None, None)
    numbers = regenerated_numbers(table1, backbones, audit, shortcut, named_tables(table2=table2, table3=table3),
                                  named_tables(domain_generalization=domain_generalization, cross_dataset=cross_dataset))
    frame = compare(numbers, known)
    write_reproduction(frame, out_csv, out_md, info)
    log.info("%d of %d numbers within tolerance", (frame["within"] == "yes").sum(), len(frame))

