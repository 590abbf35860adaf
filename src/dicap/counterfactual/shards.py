"""Sharding of a few-shot split for counterfactual generation, and the merge of shards.

Shard ``k`` of ``K`` owns rows ``k, k + K, ...`` of the split, so shards are balanced and a
failed shard reruns alone; the merge checks that the shards cover the split exactly once.
This module needs no torch, so the merge job starts fast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# The arrays of a counterfactual file, a shard's or the merged one.  Only the embedded suite,
# which renders its data, knows the last two: they are the audit's references.
GENERATED = "images"  # the generated counterfactuals
TRUE = "true_images"  # f(y_cf, n, u): the true counterfactual the SCM renders
UNGUIDED = "unguided_images"  # the s = 0 regeneration of the inverted noise: what inversion alone does


def shard_rows(split: pd.DataFrame, shard: int, shards: int) -> pd.DataFrame:
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0..{shards - 1}")
    rows = split.iloc[shard::shards].copy()
    rows.insert(0, "row", np.arange(shard, len(split), shards))
    return rows.reset_index(drop=True)


def merge(parts: list[tuple[dict[str, np.ndarray], pd.DataFrame]], n_rows: int) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Concatenate shard outputs in split-row order; refuse gaps or overlaps."""
    table = pd.concat([t for _, t in parts], ignore_index=True)
    order = np.argsort(table["row"].to_numpy(), kind="stable")
    rows = table["row"].to_numpy()[order]
    if len(rows) != n_rows or not np.array_equal(rows, np.arange(n_rows)):
        raise ValueError(f"shards cover rows {sorted(set(rows.tolist()))[:10]}..., expected each of 0..{n_rows - 1} once")
    arrays = {key: np.concatenate([a[key] for a, _ in parts])[order] for key in parts[0][0]}
    return arrays, table.iloc[order].reset_index(drop=True)
