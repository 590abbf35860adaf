"""Jobs of rules/transfer.smk: prompts scored unchanged where they did not learn.

Domain generalization (the same classes, another domain: ImageNet-V2, -Sketch, -A, -R; the
embedded suite's shifted renders) and cross-dataset transfer (other classes: the other ten
datasets) share every step: the target's test images encoded once by the source's frozen
CLIP, then one job per (source, variant, target, seed) scoring every method's prompt.

Each function is the rule of the same name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

__all__ = ["encode_target_features", "evaluate_transfer", "domain_generalization", "cross_dataset"]

log = logging.getLogger(__name__)


def encode_target_features(
    dataset_dir: Annotated[Path, "the target's store (another dataset's, or the embedded dataset's shifted renders)"],
    clip_dir: Annotated[Path, "the source dataset's CLIP: the one its prompts learned beside"],
    out: Path,
    threads: int = 1,
) -> None:
    """Cache the frozen source CLIP's features of the splits a target store is scored on."""
    from dicap.data.store import DatasetStore
    from dicap.evaluation.features import encode_splits

    store = DatasetStore.open(dataset_dir)
    encode_splits(store, clip_dir, store.transfer_splits, out, threads)


def evaluate_transfer(
    dataset_dir: Annotated[Path, "the target's store"],
    clip_dir: Path,
    features: Annotated[Path, "encode_target_features' cache"],
    prompts: Annotated[list[Path], "one learned context per method, in --methods' order"],
    methods: list[str],
    seed: int,
    target: str,
    params: Annotated[dict[str, dict[str, Any]], "each method's parameters (prompting.methods.method_params)"],
    out: Path,
    threads: int = 1,
) -> None:
    """Score every method's prompt on the target's transfer splits, among all its classes."""
    from dicap.evaluation.prompts import open_scoring, score_transfer
    from dicap.guards import check_table_finite
    from dicap.io import write_table

    bundle, store, cached = open_scoring(dataset_dir, clip_dir, features, methods, prompts, params, seed, threads, out)
    table = score_transfer(bundle, store, cached, dict(zip(methods, prompts)), params, seed, target, out)
    check_table_finite(out, table)
    write_table(out, table)
    for method, rows in table.groupby("method", sort=False):
        log.info("%s: %s", method, "; ".join(f"{r.domain} {r.accuracy:.2f}" for r in rows.itertuples()))
    log.info("wrote %s", out)


def domain_generalization(
    metrics: Annotated[list[Path], "evaluate_transfer's per-seed files of the domain-generalization targets"],
    config_json: Annotated[dict[str, Any], "the whole config, for the provenance record"],
    out_csv: Path,
    out_md: Path,
) -> None:
    """The same classes in unseen domains: mean ± SE per run and domain, the average column,
    and every DiCap run against its own learner, paired by seed."""
    _transfer_table("domain_generalization", metrics, config_json, out_csv, out_md)


def cross_dataset(
    metrics: Annotated[list[Path], "evaluate_transfer's per-seed files of the cross-dataset targets"],
    config_json: Annotated[dict[str, Any], "the whole config, for the provenance record"],
    out_csv: Path,
    out_md: Path,
) -> None:
    """Other datasets' classes: mean ± SE per run and target, the average column, and every
    DiCap run against its own learner, paired by seed."""
    _transfer_table("cross_dataset", metrics, config_json, out_csv, out_md)


def _transfer_table(table: str, metrics: list[Path], config: dict[str, Any], out_csv: Path, out_md: Path) -> None:
    from dicap.report.transfer import build_transfer, read_transfer, write_transfer

    summary, paired = build_transfer(read_transfer(metrics))
    write_transfer(table, summary, paired, out_csv, out_md, config)
