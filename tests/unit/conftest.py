"""The unit tier: in-process tests of one module each (tests/unit/<package>/test_<module>.py
mirrors src/dicap/<package>/<module>.py).  A unit test starts no process: every way of starting
one raises here, so a test that needs a subprocess fails and moves to tests/workflow/."""

from __future__ import annotations

import os
import platform
import subprocess

import matplotlib.font_manager  # noqa: F401  (builds matplotlib's font cache, which runs fc-list, before any guard)
import pytest

# The standard library caches what it learns from a subprocess: learn it here, before the guard.
platform.processor()  # `uname -p`, read by report.reproduction.machine()


class SubprocessInUnitTest(RuntimeError):
    """A unit test tried to start a process."""


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise SubprocessInUnitTest(f"a unit test started a process ({what}): it belongs in tests/workflow/ (tests/README.md)")
    return refuse


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Every unit test runs, fixtures included (a module's fixtures are set up inside its first
    test's protocol), with subprocess, fork, spawn and os.system refused."""
    if item.get_closest_marker("unit") is None:  # a listed exception (conftest.TIER_EXCEPTIONS)
        return (yield)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "_execute_child", _refuse("subprocess.Popen"))
        for name in ("system", "fork", "forkpty", "posix_spawn", "posix_spawnp", "execv", "execve", "spawnv", "spawnve"):
            if hasattr(os, name):
                patch.setattr(os, name, _refuse(f"os.{name}"))
        return (yield)
