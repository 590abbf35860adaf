"""The maintainer's commands that are no rule's job: they move the reference numbers.

``dicap record_reference`` freezes a run's numbers as the reference every later run compares
with (``results/reference/<suite>.csv``); ``dicap readme_results`` writes the reference tables
(``results/reference/embedded.md``) from it (docs/reproduction.md).  Like the jobs, they only wire files to library functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

__all__ = ["record_reference", "readme_results"]


def record_reference(table1: Path, out: Path, backbones: Path | None = None, audit: Path | None = None,
                     shortcut: Path | None = None, table2: Path | None = None, table3: Path | None = None) -> None:
    """Freeze this run's numbers (and this machine) as the reference later runs compare with.

    Each number is recorded with its seed std and seed count (``std``, ``n``), which size its
    tolerance in later runs, and the machine record names the CPU down to its SIMD flags.
    """
    from dicap.report.reproduction import record_reference as record
    from dicap.report.reproduction import regenerated_numbers, task_tables

    record(regenerated_numbers(table1, backbones, audit, shortcut, task_tables(table2, table3)), out,
           table1.with_suffix(".provenance.json"))


def readme_results(
    reference: Path = Path("results/reference/embedded.csv"), out: Path = Path("results/reference/embedded.md"),
    check: Annotated[bool, "fail if the tables differ from the reference instead of writing them"] = False,
) -> None:
    """Write the reference tables (results/reference/embedded.md) from the reference file."""
    from dicap.report.readme import results_section, write_tables

    if not write_tables(out, results_section(reference), check=check):
        raise ValueError(f"{out} differs from {reference}: run dicap readme_results")
