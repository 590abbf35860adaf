"""Running Snakemake as users do, from the repository root, for the workflow and cluster tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
TINY_CONFIGS = (str(REPO / "config.yaml"), str(REPO / "tests" / "config.test.yaml"))


def snakemake(*args: str, cwd: Path = REPO, timeout: int = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """One Snakemake call under a hard limit: ``timeout -k`` also stops a hung executor plugin,
    which ignores SIGTERM (without slurmdbd it polls sacct forever)."""
    return subprocess.run(
        ["timeout", "-k", "10", str(timeout), SNAKEMAKE, *args], cwd=cwd, env=env or ENV,
        capture_output=True, text=True, timeout=timeout + 30,
    )


def tiny_args(workdir: Path) -> list[str]:
    """The embedded suite at test size (tests/config.test.yaml), built in ``workdir``."""
    return ["-s", str(REPO / "Snakefile"), "--configfile", *TINY_CONFIGS, "--directory", str(workdir)]


def job_counts(dry_run_stdout: str) -> dict[str, int]:
    """Per-rule job counts from the "Job stats" table of a dry run."""
    import re

    stats = dry_run_stdout.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {rule: int(n) for rule, n in re.findall(r"(?m)^(\w+)\s+(\d+)$", stats) if rule != "total"}
