"""Which run a workflow invocation is, and the folder it writes in (docs/running.md#runs).

A one-off override (``--config seeds='[1]'``) used to rewrite the main run's ``results/`` and,
for a ``data`` key, re-render ``build/`` in place.  Every other run now works in a folder of
its own, ``runs/<name>/``, made the workflow's working directory: Snakemake then resolves every
relative path there at once (``build/``, ``results/``, ``logs/`` and its own ``.snakemake/``
records), so nothing of the main run can be touched, two runs can go at the same time, and a
target typed as ``results/table1.csv`` names that run's table.

The main run is the checkout's config files as they are (``config.yaml``, with
``config.paper.yaml`` for the paper suite); DVC's experiments (``dvc exp run -S``) change those
files and keep each experiment apart themselves, in git refs and DVC's cache (docs/dvc.md).

It sits just above ``config`` and ``io`` (the registry's variable, the hash), so the Snakefile
can use it before it plans anything.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from dicap.config import REGISTRY_ENV
from dicap.io import params_hash

MAIN = ""  # the run name of the checkout's own config: it writes at the repository root
RUNS = "runs"  # every other run: runs/<name>/
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # config.schema.yaml's `run` pattern, without the empty main
AUTO_PREFIX = "config-"  # an unnamed one-off run: config-<hash of its experiment config>
# Keys that change no output: a --config that sets only these is still the main run.
NOT_EXPERIMENT = ("run", "downloads")
RESULTS_RECORD = "results/table1.provenance.json"  # what the table in results/ was made from


def experiment_hash(config: Mapping[str, Any]) -> str:
    """The hash of what a run computes: its config without the keys that change no output."""
    return params_hash({k: v for k, v in config.items() if k not in NOT_EXPERIMENT})


def run_name(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> str:
    """The run ``config`` is: ``config["run"]`` when the user named it, else ``config-<hash>``
    when ``--config`` (``overrides``) changed an experiment key, else the main run (``""``).

    The name is derived from the whole validated config, so the same overrides find the same
    folder again (Snakemake then reruns only what is stale there)."""
    named = config.get("run") or MAIN
    if named:
        if not NAME.fullmatch(named):
            raise ValueError(f"key 'run' = {named!r}: a run name is 1-64 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit")
        return named
    if any(key not in NOT_EXPERIMENT for key in overrides):
        return AUTO_PREFIX + experiment_hash(config)[:8]
    return MAIN


def run_folder(basedir: str | Path, name: str) -> Path | None:
    """``<basedir>/runs/<name>``, absolute, for any run but the main one (``None``).

    Absolute, because a cluster job starts in the directory Snakemake was started from and
    parses the Snakefile again: a relative folder would nest a second time there."""
    if name == MAIN:
        return None
    if not NAME.fullmatch(name):
        raise ValueError(f"key 'run' = {name!r}: not a run name")
    return Path(os.path.abspath(basedir)) / RUNS / name


def anchor_user_paths(config: dict[str, Any], environ: MutableMapping[str, str] = os.environ) -> None:
    """Make the paths a user gives relative to where they started absolute, before the run
    moves into its folder: ``data.root`` (the paper suite's datasets, downloaded once and
    shared by every run) and ``$DICAP_REGISTRY`` (their own registry, read by every job)."""
    if "root" in config.get("data", {}):
        config["data"]["root"] = os.path.abspath(config["data"]["root"])
    if environ.get(REGISTRY_ENV):
        environ[REGISTRY_ENV] = os.path.abspath(environ[REGISTRY_ENV])


def describe(name: str) -> str:
    """A run as the tables name it: ``main`` or the run's name."""
    return name or "main"


def foreign_results(suite: str, record: str | Path = RESULTS_RECORD) -> str | None:
    """The suite whose tables ``results/`` holds, when it is not ``suite`` (else ``None``).

    Both suites write ``results/table1.csv``.  A table pulled with DVC carries no Snakemake
    record, so a run of the other suite in that checkout would see the table present and plan
    nothing ("Nothing to be done") while none of its own inputs exist."""
    try:
        recorded = json.loads(Path(record).read_text()).get("params", {}).get("suite")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, str) and recorded != suite else None
