"""The maintainer's commands (tools.py): the reference tables job and its check."""

from __future__ import annotations

import pytest

from dicap.tools import readme_results
from helpers import REPO

REFERENCE = REPO / "results" / "reference" / "embedded.csv"


def test_the_job_writes_the_tables_and_its_check_fails_on_a_stale_file(tmp_path):
    out = tmp_path / "embedded.md"
    with pytest.raises(ValueError, match="differs from .*embedded.csv: run dicap readme_results"):
        readme_results(REFERENCE, out, check=True)
    readme_results(REFERENCE, out)
    readme_results(REFERENCE, out, check=True)
    assert out.read_text() == (REPO / "results" / "reference" / "embedded.md").read_text()
