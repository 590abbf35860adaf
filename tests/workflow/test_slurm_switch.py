"""The test command is safe on any machine: the live SLURM tests (tests/slurm/conftest.py) run
only with ``DICAP_SLURM_TESTS=1``, are skipped with one line otherwise, and an empty selection
still fails."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import REPO

SWITCH = "DICAP_SLURM_TESTS"


def pytest_run(*args: str, switch: str | None = None) -> subprocess.CompletedProcess:
    """``pytest -q ARGS`` from the repository root, the switch set to ``switch`` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != SWITCH}
    if switch is not None:
        env[SWITCH] = switch
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("switch", [None, "", "0"])
def test_without_the_switch_the_slurm_tier_is_skipped_with_one_line(switch):
    out = pytest_run("-m", "slurm", "tests/slurm", switch=switch)
    assert out.returncode == 0, out.stdout[-2000:]
    assert " skipped" in out.stdout and " passed" not in out.stdout, out.stdout[-2000:]
    lines = [line for line in out.stdout.splitlines() if f"{SWITCH}=1" in line]
    assert len(lines) == 1, out.stdout[-2000:]


@pytest.mark.parametrize("switch", ["yes", "true", "2"])
def test_a_switch_that_is_not_0_or_1_stops_the_run_naming_it(switch):
    out = pytest_run("-m", "slurm", "tests/slurm", "--collect-only", switch=switch)
    assert out.returncode == pytest.ExitCode.USAGE_ERROR
    assert f"{SWITCH}={switch!r}" in out.stdout + out.stderr


def test_a_selection_that_collects_nothing_still_fails():
    out = pytest_run("-m", "unit", "tests/slurm")
    assert out.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, out.stdout[-2000:]
    assert f"{SWITCH}=1" not in out.stdout
