"""The few-shot split (data/splits.py): counts, the spurious share (on each spurious factor), seeds, and refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dicap.data import scm
from dicap.data.splits import few_shot

# --- the few-shot split -------------------------------------------------------------------------


PAIRING = [3, 5, 0, 7, 1, 2]  # each class's paired background in the pools below


def _pool(n_per_class: int = 60, n_classes: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for label in range(n_classes):
        for i in range(n_per_class):
            # a third of each class carries its spurious background, the rest any other
            bg = PAIRING[label] if i % 3 == 0 else int((PAIRING[label] + 1 + rng.integers(7)) % 8)
            rows.append({"split": "train", "index": label * n_per_class + i, "label": label, "bg": bg})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.mark.parametrize("shots,strength", [(8, 0.75), (5, 0.9), (7, 0.3), (6, 0.0), (4, 1.0)])
def test_few_shot_counts_and_spurious_share(shots, strength):
    pool, base = _pool(), [0, 1, 2]
    split = few_shot(pool, base, shots, seed=1, spurious_strength=strength, pairing=PAIRING)
    assert sorted(split["label"].unique()) == base
    assert split.groupby("label").size().tolist() == [shots] * len(base)
    assert not split["index"].duplicated().any()
    assert set(split["index"]) <= set(pool["index"])
    for label, group in split.groupby("label"):
        n_spurious = int((group["bg"] == PAIRING[label]).sum())
        assert n_spurious == round(strength * shots)


def test_few_shot_without_strength_is_a_plain_draw():
    split = few_shot(_pool(), [0, 1, 2], 10, seed=3)
    assert split.groupby("label").size().tolist() == [10, 10, 10]
    assert not split["index"].duplicated().any()


def test_few_shot_deterministic_per_seed_and_varies_across_seeds():
    pool = _pool()
    a = few_shot(pool, [0, 1, 2], 8, seed=1, spurious_strength=0.5, pairing=PAIRING)
    b = few_shot(pool.copy(), [0, 1, 2], 8, seed=1, spurious_strength=0.5, pairing=PAIRING)
    c = few_shot(pool, [0, 1, 2], 8, seed=2, spurious_strength=0.5, pairing=PAIRING)
    pd.testing.assert_frame_equal(a, b)
    assert set(a["index"]) != set(c["index"])


def test_few_shot_raises_naming_the_class_when_pool_too_small():
    pool = _pool(n_per_class=12)  # 4 spurious and 8 other rows per class
    pool = pool[~((pool["label"] == 2) & (pool["index"] % 2 == 0))]  # class 2 loses half its rows
    few_shot(pool, [0, 1], 12, seed=0)  # fine for full classes
    with pytest.raises(ValueError, match=r"class 2\b"):
        few_shot(pool, [0, 1, 2], 12, seed=0)
    few_shot(pool, [0, 1], 8, seed=0, spurious_strength=0.5, pairing=PAIRING)  # 4 spurious asked, 4 available
    with pytest.raises(ValueError, match=r"class 1\b"):
        few_shot(pool, [1, 0], 8, seed=0, spurious_strength=0.75, pairing=PAIRING)  # 6 spurious asked, 4 available


def test_a_spurious_draw_without_a_pairing_is_refused():
    with pytest.raises(ValueError, match="paired background"):
        few_shot(_pool(), [0, 1, 2], 8, seed=0, spurious_strength=0.5)


@pytest.mark.parametrize("factor", scm.SPURIOUS_FACTORS)
@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_the_spurious_share_is_counted_on_the_spurious_factor(factor, strength):
    """With data.spurious_factor, the paired shots carry their class's level of that factor."""
    factors = scm.sample_factors(np.random.default_rng(4), 6 * 80)
    pool = pd.DataFrame([{"split": "train", "index": i, "label": i % 6, **f.__dict__} for i, f in enumerate(factors)])
    split = few_shot(pool, [0, 1, 2], 4, seed=2, spurious_strength=strength, pairing=PAIRING, factor=factor)
    paired = scm.factor_levels(factor, split) == np.asarray(PAIRING)[split["label"]]
    assert pd.Series(paired).groupby(split["label"]).sum().tolist() == [round(strength * 4)] * 3
    if factor != "background":  # another factor's draw is not the background's
        assert not split.equals(few_shot(pool, [0, 1, 2], 4, seed=2, spurious_strength=strength, pairing=PAIRING))
