"""The README's results section (report/readme.py): written from the reference, and rewritten alone."""

from __future__ import annotations

from dicap.report.readme import END, START, results_section, update_readme
from helpers import REPO

REFERENCE = REPO / "results" / "reference" / "embedded.csv"


def test_readme_results_section_is_the_reference():
    """The README's numbers are written from results/reference/embedded.csv, never typed."""
    assert update_readme(REPO / "README.md", results_section(REFERENCE), check=True), (
        "README.md's results section is stale: run "
        "`dicap readme_results --reference results/reference/embedded.csv --readme README.md`")


def test_readme_rewrite_replaces_only_the_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold numbers\n{END}\noutro\n")
    update_readme(readme, results_section(REFERENCE))
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "old numbers" not in text
    assert "| shapes | coop |" in text
