"""The few-shot split (data/splits.py): counts, the spurious share (on each spurious factor), seeds, and
refusals; the classes each variant trains on (base, or every class for all_classes)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from dicap import layout
from dicap.data import embedded, scm
from dicap.data.splits import class_set, few_shot, trained_classes, training_split
from dicap.data.store import DatasetStore
from helpers import SIZES

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


# --- the training split of a store: the base half, or every class (all_classes) -------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> DatasetStore:
    """Rendered shapes (10 classes, 5 base) with 40 pool images a class: enough paired ones for 1 shot in 2."""
    root = tmp_path_factory.mktemp("split_store") / "data"
    embedded.build("shapes", {**SIZES, "pool_per_class": 40}, 0, root)
    return DatasetStore.open(root)


# sha256 of training_split(store, 2, seed, strength).to_csv(index=False) before all_classes existed:
# the base-to-novel splits (main, the ablations, the controls) must keep their bytes.
BASE_SPLITS = {(1, None): "6162d7cd5aa8030c", (1, 0.5): "06d8a3f03a3e5018",
               (2, None): "8ca96f35308c502f", (2, 0.5): "281d173c94aa8dc6"}


@pytest.mark.parametrize("seed, strength", sorted(BASE_SPLITS, key=str))
def test_the_base_split_keeps_its_rows(store, seed, strength):
    split = training_split(store, 2, seed, strength)
    assert hashlib.sha256(split.to_csv(index=False).encode()).hexdigest()[:16] == BASE_SPLITS[seed, strength]
    pd.testing.assert_frame_equal(training_split(store, 2, seed, strength, "base"), split)


@pytest.mark.parametrize("shots", [1, 2, 4])
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("strength", [None, 0.5])
def test_the_all_classes_split_holds_the_shots_of_every_class(store, shots, seed, strength):
    split = training_split(store, shots, seed, strength, "all")
    assert split.groupby("label").size().to_dict() == {c: shots for c in range(len(store.classes))}
    assert not split["index"].duplicated().any()
    if strength is not None:  # every class's shots carry its paired level in the spurious share
        paired = store.spurious_levels(split) == np.asarray(store.pairing(seed))[split["label"]]
        assert pd.Series(paired).groupby(split["label"]).sum().tolist() == [round(strength * shots)] * len(store.classes)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_unbiased_all_classes_split_extends_the_base_split(store, seed):
    """Drawn over every class in label order either way: the base classes' shots are the same images."""
    every = training_split(store, 2, seed, None, "all")
    base = training_split(store, 2, seed, None, "base")
    pd.testing.assert_frame_equal(every[every["label"].isin(store.base_classes)].reset_index(drop=True), base)


@pytest.mark.parametrize("variant, want", [(layout.MAIN, "base"), (layout.TRUE_CF, "base"), (layout.UNBIASED_SHOTS, "base"),
                                           ("ctx8", "base"), ("sample_random", "base"), (layout.ALL_CLASSES, "all")])
def test_each_variant_trains_on_its_class_set(store, variant, want):
    classes = trained_classes(store, variant)
    assert classes == (store.base_classes if want == "base" else list(range(len(store.classes)))) == class_set(store, want)
    assert len(classes) == (5 if want == "base" else 10)


def test_an_unknown_class_set_is_refused(store):
    with pytest.raises(ValueError, match="unknown class set 'novel'"):
        training_split(store, 2, 1, None, "novel")
