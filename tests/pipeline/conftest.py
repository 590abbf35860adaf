"""The pipeline tier: the tiny embedded suite, run once for the session (``tiny_run``, in
tests/conftest.py) and checked by one test per scenario.  Tests that only read the run or plan
over it (``-n``) share it; a test that runs jobs in it (a retrain, a killed shard, the ablations,
the report) gets its own copy (``run_copy``), so the shared run stays as ``all`` left it and one
failure cannot change what the next test sees."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from snakemake_runner import TINY_CONFIGS


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the shared run, modification times and Snakemake's records included, so Snakemake
    sees it exactly as finished: a few megabytes, a fraction of a second."""
    dest = tmp_path / "run"
    shutil.copytree(tiny_run, dest, symlinks=True)
    return dest


def _merge(base: dict, over: dict) -> dict:
    return {**base, **{k: _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                       for k, v in over.items()}}


@pytest.fixture(scope="session")
def tiny_config() -> dict:
    """The run's config: tests/config.test.yaml merged over config.yaml, as Snakemake merges --configfile files."""
    config, tiny = (yaml.safe_load(Path(path).read_text()) for path in TINY_CONFIGS)
    return _merge(config, tiny)
