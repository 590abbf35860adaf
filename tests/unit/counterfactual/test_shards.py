"""Shard bookkeeping (counterfactual/shards.py): every row in one shard, merged back in order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dicap.counterfactual import shards

pytestmark = pytest.mark.usefixtures("single_thread")


def _split(n: int) -> pd.DataFrame:
    return pd.DataFrame({"split": "train", "index": np.arange(100, 100 + n), "label": np.arange(n) % 3})


@pytest.mark.parametrize("n,k", [(10, 3), (7, 1), (5, 5), (4, 6)])
def test_shard_rows_cover_every_row_once(n, k):
    split = _split(n)
    parts = [shards.shard_rows(split, s, k) for s in range(k)]
    rows = np.concatenate([p["row"].to_numpy() for p in parts])
    assert sorted(rows.tolist()) == list(range(n))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    for p in parts:  # each shard row still carries its own split row
        np.testing.assert_array_equal(p["index"].to_numpy(), split["index"].to_numpy()[p["row"].to_numpy()])


def test_shard_rows_rejects_bad_shard():
    with pytest.raises(ValueError):
        shards.shard_rows(_split(4), 2, 2)
    with pytest.raises(ValueError):
        shards.shard_rows(_split(4), -1, 2)


def _outputs(split: pd.DataFrame, k: int) -> list[tuple[dict[str, np.ndarray], pd.DataFrame]]:
    parts = []
    for s in range(k):
        rows = shards.shard_rows(split, s, k)
        # each "image" encodes its split row, so the merge order is checkable
        imgs = np.stack([np.full((2, 2, 3), r, np.uint8) for r in rows["row"]])
        parts.append(({"images": imgs}, rows.assign(y_cf=rows["row"] * 10)))
    return parts


def test_merge_restores_row_order():
    split = _split(11)
    parts = _outputs(split, 3)
    arrays, table = shards.merge(parts[::-1], len(split))  # shard order must not matter
    assert table["row"].tolist() == list(range(11))
    assert table["index"].tolist() == split["index"].tolist()
    assert (table["y_cf"] == table["row"] * 10).all()
    assert arrays["images"][:, 0, 0, 0].tolist() == list(range(11))


def test_merge_rejects_missing_or_duplicated_shard():
    split = _split(11)
    parts = _outputs(split, 3)
    with pytest.raises(ValueError):
        shards.merge(parts[:2], len(split))
    with pytest.raises(ValueError):
        shards.merge([parts[0], parts[1], parts[1]], len(split))
    with pytest.raises(ValueError):
        shards.merge(parts, len(split) + 1)
