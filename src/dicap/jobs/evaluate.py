"""Jobs of rules/evaluate.smk: every method's prompt scored on base and novel classes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["evaluate"]

log = logging.getLogger(__name__)


def evaluate(
    dataset_dir: Path,
    clip_dir: Path,
    features: Annotated[Path, "encode_eval_features' cache"],
    prompts: Annotated[list[Path], "one learned context per method, in --methods' order"],
    methods: list[str],
    seed: int,
    params: Annotated[dict[str, dict[str, Any]], "each method's parameters (prompting.methods.method_params)"],
    out: Path,
    threads: int = 1,
) -> None:
    """Score every method's prompt on base and novel classes of every test split (the
    embedded suite's background grid as the seed's aligned and conflict rows)."""
    from dicap.data.store import ARRAYS
    from dicap.evaluation.prompts import open_scoring, score_prompts
    from dicap.guards import check_table_finite
    from dicap.io import write_table

    bundle, store, cached = open_scoring(dataset_dir, clip_dir, features, methods, prompts, params, seed, threads, out)
    pairing = store.pairing(seed) if store.storage == ARRAYS else None  # rendered data: the seed's shortcut pairing
    table = score_prompts(bundle, store, cached, dict(zip(methods, prompts)), params, seed, out, pairing)
    check_table_finite(out, table)
    write_table(out, table)
    for line in _accuracy_lines(table):
        log.info("%s", line)
    log.info("wrote %s", out)


def _accuracy_lines(table: "pd.DataFrame") -> list[str]:
    """What ``evaluate`` wrote, one line per method in the table's order: each split's HM,
    base and novel accuracy (%), e.g. ``coop: test HM 71.20 (base 80.10, novel 64.08)``."""
    lines = []
    for method, rows in table.groupby("method", sort=False):
        splits = "; ".join(f"{r.split} HM {r.hm:.2f} (base {r.base:.2f}, novel {r.novel:.2f})" for r in rows.itertuples())
        lines.append(f"{method}: {splits}")
    return lines

