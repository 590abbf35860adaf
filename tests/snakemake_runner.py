"""Running Snakemake as users do, from the repository root, for the workflow and cluster tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

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


# DVC over a checkout of its own (tests/pipeline/test_dvc_*.py)
DVC = str(BIN / "dvc")
DVC_ENV = {**ENV, "DVC_NO_ANALYTICS": "1", "DICAP_VENV": str(BIN.parent)}


def run(*args: str, cwd: Path, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """A command in ``cwd``, as a user runs DVC and Snakemake there (``env``: DVC_ENV); it must succeed."""
    out = subprocess.run(list(args), cwd=cwd, env=env or DVC_ENV, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args} failed:\n{(out.stdout + out.stderr)[-4000:]}"
    return out


def tiny_checkout(dest: Path) -> None:
    """This checkout's files (as git would commit them), with the tiny config as config.yaml."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    config = yaml.safe_load(Path(TINY_CONFIGS[0]).read_text())
    for key, value in yaml.safe_load(Path(TINY_CONFIGS[1]).read_text()).items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    (dest / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (dest / "dvc.lock").unlink(missing_ok=True)
