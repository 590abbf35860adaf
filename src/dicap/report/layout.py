"""The build tree's naming contract, read back by the report jobs.

Per-seed artifacts live at ``<kind>/<dataset>/<variant>/seed<k>.<ext>`` (see
rules/common.smk), so a report job can tell what each input file is from its path alone
and the rules need not pass a parallel manifest that could drift out of step.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

SEED_FILE = re.compile(r"seed(\d+)")


class ArtifactKey(NamedTuple):
    dataset: str
    variant: str
    seed: int


def artifact_key(path: str | Path, datasets: list[str] | None = None) -> ArtifactKey:
    """``.../<dataset>/<variant>/seed<k>.<ext>`` -> its dataset, variant and seed."""
    path = Path(path)
    match = SEED_FILE.fullmatch(path.stem)
    dataset = path.parent.parent.name
    if match is None or (datasets is not None and dataset not in datasets):
        raise ValueError(f"{path} does not follow <kind>/<dataset>/<variant>/seed<k>.<ext> (datasets: {datasets})")
    return ArtifactKey(dataset, path.parent.name, int(match.group(1)))
