"""Jobs of rules/ablations.smk: each ablation, run by its rule name, writes a table and a figure.

Each function is the rule of the same name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

SETTINGS = "variant -> method -> the ablated settings it trained with (plan.Plan.prompt_ablation_settings)"

__all__ = ["ablation_guidance_scale", "ablation_sampling", "ablation_true_cf", "ablation_context", "ablation_loss"]


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
    """Audit scores and DiCap's accuracy against the guidance scale."""
    _ablation("guidance_scale", datasets, metrics, audits, oracle_reports, out_csv, out_png)


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


def _prompt_ablation(datasets: list[str], metrics: list[Path], settings: dict[str, Any], out_csv: Path, out_png: Path) -> None:
    from dicap.io import write_table
    from dicap.report.ablations import build_prompt_ablation, plot_prompt_ablation

    table = build_prompt_ablation(metrics, datasets, settings)
    write_table(out_csv, table)
    plot_prompt_ablation(table, settings, out_png)


def ablation_context(datasets: list[str], metrics: list[Path], settings: Annotated[dict[str, Any], SETTINGS],
                     out_csv: Path, out_png: Path) -> None:
    """CoOp's and DiCap's accuracy against the context length (random initial context for every length)."""
    _prompt_ablation(datasets, metrics, settings, out_csv, out_png)


def ablation_loss(datasets: list[str], metrics: list[Path], settings: Annotated[dict[str, Any], SETTINGS],
                  out_csv: Path, out_png: Path) -> None:
    """The readings' accuracy against the hard negative's weight and temperature (dicap, dicap_pos) and the
    labelled counterfactual's weight (dicap_pos, dicap_label)."""
    _prompt_ablation(datasets, metrics, settings, out_csv, out_png)

