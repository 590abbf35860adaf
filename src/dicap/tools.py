"""The maintainer's commands that are no rule's job: they move the reference numbers.

``dicap record_reference`` freezes a run's numbers as the reference every later run compares
with (``results/reference/<suite>.csv``); ``dicap readme_results`` writes the reference tables
(``results/reference/embedded.md``) from it (docs/reproduction.md); ``dicap budget`` prints what
a config will cost on a GPU cluster before its first job (dicap.budget, docs/cluster.md).  Like the jobs, they only wire files to library functions.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any

__all__ = ["record_reference", "readme_results", "budget"]


def record_reference(table1: Path, out: Path, backbones: Path | None = None, audit: Path | None = None,
                     shortcut: Path | None = None, table2: Path | None = None, table3: Path | None = None,
                     domain_generalization: Path | None = None, cross_dataset: Path | None = None) -> None:
    """Freeze this run's numbers (and this machine) as the reference later runs compare with.

    Each number is recorded with its seed std and seed count (``std``, ``n``), which size its
    tolerance in later runs, and the machine record names the CPU down to its SIMD flags.
    """
    from dicap.report.reproduction import record_reference as record
    from dicap.report.reproduction import named_tables, regenerated_numbers

    numbers = regenerated_numbers(table1, backbones, audit, shortcut, named_tables(table2=table2, table3=table3),
                                  named_tables(domain_generalization=domain_generalization, cross_dataset=cross_dataset))
    record(numbers, out, table1.with_suffix(".provenance.json"))


def readme_results(
    reference: Path = Path("results/reference/embedded.csv"), out: Path = Path("results/reference/embedded.md"),
    check: Annotated[bool, "fail if the tables differ from the reference instead of writing them"] = False,
    readme: Annotated[Path, "README.md, whose transfer paragraphs are written from the reference too"] = Path("README.md"),
) -> None:
    """Write the reference tables (results/reference/embedded.md) and the README's
    transfer paragraphs from the reference file."""
    from dicap.report.readme import readme_with_paragraph, results_section, write_tables

    if not write_tables(out, results_section(reference), check=check):
        raise ValueError(f"{out} differs from {reference}: run dicap readme_results")
    if not write_tables(readme, readme_with_paragraph(readme.read_text(), reference), check=check):
        raise ValueError(f"{readme}'s transfer paragraphs differ from {reference}: run dicap readme_results")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid over ``base``, nested mappings merged (as Snakemake merges config files)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def budget(
    configfile: Annotated[list[Path], "config files, later ones over earlier ones (as snakemake --configfile)"] = (
        Path("config.yaml"), Path("config.paper.yaml")),
    datasets: Annotated[list[str] | None, "only these datasets (as --config datasets=[...])"] = None,
    methods: Annotated[list[str] | None, "only these methods"] = None,
    seeds: Annotated[list[int] | None, "only these seeds"] = None,
    table1_only: Annotated[bool, "leave out Tables 2 and 3 and the transfer tables (as the target results/table1.csv)"] = False,
) -> None:
    """Print the plan's GPU budget per stage: jobs, GPU-hours, peak memory and the total to ask for."""
    import yaml

    from dicap.budget import estimate, format_budget
    from dicap.config import ConfigError, validate_config, with_defaults
    from dicap.plan import Plan

    config: dict[str, Any] = {}
    for path in configfile:
        loaded = yaml.safe_load(Path(path).read_text())
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of keys at the top level")
        config = _merge(config, loaded)
    overrides = {"datasets": datasets, "methods": methods, "seeds": seeds}
    config |= {k: v for k, v in overrides.items() if v is not None}
    if table1_only:  # no text tasks and no transfer tables
        config["tasks"] = {**config.get("tasks", {}), "datasets": {}}
        config["transfer"] = {**config.get("transfer", {}), "domain_generalization": [], "cross_dataset": []}
    config = validate_config(with_defaults(config), " + ".join(map(str, configfile)))
    if config["suite"] != "paper":
        raise ValueError(f"key 'suite' = {config['suite']!r}: dicap budget sizes the paper suite's GPU jobs "
                         "(add config.paper.yaml); the embedded suite runs on a CPU (README: quick start)")
    print(format_budget(estimate(Plan(config))))
