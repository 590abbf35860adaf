"""The live SLURM tier runs only when asked: ``DICAP_SLURM_TESTS=1`` (``.ci/run`` sets it).

Bringing the cluster up (tests/cluster/cluster.sh) installs Debian packages as root and starts
munge, MariaDB and the SLURM daemons: nothing the quick start's ``bash scripts/test.sh`` may do
to a laptop unasked.  Without the switch every test here is skipped, not deselected, so
``-m slurm`` still collects them (no "no tests collected" exit), and the run ends with one line
saying how to turn them on.
"""

from __future__ import annotations

import os

import pytest

SWITCH = "DICAP_SLURM_TESTS"
HOW = (f"live SLURM tests skipped: {SWITCH}=1 runs them (tests/cluster/cluster.sh installs slurm, munge and "
       "mariadb as root and starts them)")
HERE = os.path.dirname(os.path.abspath(__file__))


def enabled() -> bool:
    """Whether the live tests were asked for: ``DICAP_SLURM_TESTS`` is 1; unset, empty or 0 is off."""
    value = os.environ.get(SWITCH, "")
    if value not in ("", "0", "1"):
        raise pytest.UsageError(f"{SWITCH}={value!r}: must be 1 (run the live SLURM tests) or 0 (skip them)")
    return value == "1"


def _here(item: pytest.Item) -> bool:
    return os.path.abspath(str(item.path)).startswith(HERE + os.sep)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this folder's tests unless switched on (other folders' items pass through untouched)."""
    if enabled():
        return
    skip = pytest.mark.skip(reason=HOW)
    for item in items:
        if _here(item):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """The one line, once, when any test of this folder was skipped for want of the switch."""
    skipped = terminalreporter.stats.get("skipped", [])
    if any(isinstance(r.longrepr, tuple) and r.longrepr[2].endswith(HOW) for r in skipped):
        terminalreporter.write_line(HOW, yellow=True)
