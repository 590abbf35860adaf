"""The rendered datasets (data/embedded.py): the factors decouple in the unbiased splits, the
background grid and each seed's aligned and conflict rows, and stored factors that re-render the
stored pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dicap.data import embedded, scm
from dicap.data.store import DatasetStore

DATASETS = ["shapes", "digits"]
# Large enough for the independence checks below (about 180 unbiased draws per class), small enough
# to render both datasets in a couple of seconds.
PARAMS = {"image_size": 8, "pretrain_per_class": 100, "pool_per_class": 60, "val_per_class": 4, "test_per_class": 20,
          "pretrain_spurious_strength": 0.0}
UNBIASED = ["pretrain", "train", "val", "test_unbiased"]


@pytest.fixture(scope="module", params=DATASETS)
def store(request, tmp_path_factory) -> DatasetStore:
    out = tmp_path_factory.mktemp(f"ds_{request.param}")
    embedded.build(request.param, PARAMS, seed=0, out_dir=out)
    return DatasetStore.open(out)


def _factors(row) -> scm.Factors:
    return scm.Factors(**{c: row[c] for c in scm.FACTOR_COLUMNS})


# --- rendered datasets: the factors decouple ------------------------------------------------


def test_store_layout(store):
    n_classes = len(store.classes)
    test = PARAMS["test_per_class"]
    for split, per_class in [("pretrain", PARAMS["pretrain_per_class"]), ("train", PARAMS["pool_per_class"]),
                             ("val", PARAMS["val_per_class"]), ("test_unbiased", test),
                             ("test_backgrounds", test * len(scm.BACKGROUNDS))]:
        rows = store.split(split)
        assert len(rows) == n_classes * per_class
        assert store.images[split].shape == (n_classes * per_class, 8, 8, 3)
        assert store.images[split].dtype == np.uint8
        assert np.bincount(rows["label"], minlength=n_classes).tolist() == [per_class] * n_classes


@pytest.mark.parametrize("pair", [("label", "bg"), ("label", "fg"), ("bg", "fg")])
def test_unbiased_splits_factors_independent(store, pair):
    rows = pd.concat([store.split(s) for s in UNBIASED], ignore_index=True)
    table = pd.crosstab(rows[pair[0]], rows[pair[1]])
    # every level of every factor shows up, and no cell is far from its expected count
    assert table.shape == (
        len(store.classes) if pair[0] == "label" else len(scm.BACKGROUNDS),
        len(scm.OBJECTS) if pair[1] == "fg" else len(scm.BACKGROUNDS),
    )
    from scipy.stats import chi2_contingency

    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.values.sum()
    assert np.abs(table.values - expected).max() < 5 * np.sqrt(expected.max())
    assert chi2_contingency(table.values).pvalue > 1e-3


def test_unbiased_continuous_factors_independent_of_class(store):
    rows = pd.concat([store.split(s) for s in UNBIASED], ignore_index=True)
    ranges = {
        "cx": (-scm.POSITION_RANGE, scm.POSITION_RANGE),
        "cy": (-scm.POSITION_RANGE, scm.POSITION_RANGE),
        "scale": scm.SCALE_RANGE,
        "texture": scm.TEXTURE_RANGE,
    }
    means = rows.groupby("label")[list(ranges)].mean()
    for col, (lo, hi) in ranges.items():
        assert rows[col].between(lo, hi).all()
        # a uniform's mean over ~180 draws has sd (hi - lo) / sqrt(12 * 180) ~ 0.022 (hi - lo)
        assert (means[col] - (lo + hi) / 2).abs().max() < 0.08 * (hi - lo), col


def test_background_grid_renders_every_object_on_every_background(store):
    """Only the background differs between an object's renders, so any pairing's aligned and
    conflict rows score the very same objects: their gap is the background's effect alone."""
    grid = store.split("test_backgrounds")
    n_bg = len(scm.BACKGROUNDS)
    assert len(grid) == len(store.classes) * PARAMS["test_per_class"] * n_bg
    objects = grid.groupby(np.arange(len(grid)) // n_bg)
    for _, rows in list(objects)[:: 23]:
        assert sorted(rows["bg"]) == list(range(n_bg))
        assert rows.drop(columns=["bg", "index", "caption"]).nunique().max() == 1


@pytest.mark.parametrize("seed", range(1, 40, 3))
def test_each_seeds_aligned_and_conflict_rows(store, seed):
    grid = store.split("test_backgrounds")
    pairing = store.pairing(seed)
    assert pairing == store.pairing(seed)
    halves = [store.base_classes, store.novel_classes]
    aligned, conflict = scm.paired_masks(grid["label"].to_numpy(), grid["bg"].to_numpy(), pairing, halves)
    assert not (aligned & conflict).any()
    assert (grid["bg"][aligned] == grid["label"][aligned].map(lambda c: pairing[c])).all()
    n_bg = len(scm.BACKGROUNDS)
    per_object_aligned = aligned.reshape(-1, n_bg).sum(1)
    per_object_conflict = conflict.reshape(-1, n_bg).sum(1)
    assert (per_object_aligned == 1).all()
    assert (per_object_conflict == len(store.base_classes) - 1).all()  # the other classes' colours of its half
    for half in halves:
        rows = grid[conflict & grid["label"].isin(half).to_numpy()]
        assert set(rows["bg"]) <= {pairing[c] for c in half}


SPURIOUS_PARAMS = {**PARAMS, "pretrain_per_class": 80, "pool_per_class": 12, "test_per_class": 8}


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> DatasetStore:
    """The shapes world without a pretraining correlation, at the sizes of the test below."""
    out = tmp_path_factory.mktemp("zero")
    embedded.build("shapes", SPURIOUS_PARAMS, seed=0, out_dir=out)
    return DatasetStore.open(out)


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
def test_pretrain_spurious_strength_pairs_pretraining_only(tmp_path, plain, strength):
    embedded.build("shapes", {**SPURIOUS_PARAMS, "pretrain_spurious_strength": strength}, seed=0, out_dir=tmp_path / "s")
    biased = DatasetStore.open(tmp_path / "s")
    pre = biased.split("pretrain")
    world = scm.draw_pairing(0, [biased.base_classes, biased.novel_classes])
    share = (pre["bg"] == pre["label"].map(lambda c: world[c])).mean()
    expected = strength + (1 - strength) / len(scm.BACKGROUNDS)
    assert abs(share - expected) < 4 * np.sqrt(expected * (1 - expected) / len(pre)) + 1e-9
    for split in ("train", "val", "test_unbiased", "test_backgrounds"):
        pd.testing.assert_frame_equal(biased.split(split), plain.split(split))
    # a world with a pretraining correlation keeps its one pairing for every seed's shots
    assert all(biased.pairing(seed) == (world if strength > 0 else plain.pairing(seed)) for seed in (1, 2, 3))
    assert len({tuple(plain.pairing(seed)) for seed in range(1, 6)}) > 1


def test_stored_factors_reproduce_stored_pixels(store):
    """The table's factors are the true ``n, u``: re-rendering them gives the stored image."""
    for split in ["pretrain", "test_unbiased", "test_backgrounds"]:
        rows = store.split(split)
        for i in range(0, len(rows), 37):
            row = rows.iloc[i]
            img = scm.render(store.dataset, int(row["label"]), _factors(row), 8)
            np.testing.assert_array_equal(img, store.images[split][int(row["index"])])


def test_pixels_follow_row_order_across_splits(store):
    rows = pd.concat([store.split("val").iloc[[3, 0]], store.split("train").iloc[[5]], store.split("val").iloc[[1]]])
    px = store.pixels(rows.reset_index(drop=True))
    expected = [store.images[s][i] for s, i in zip(rows["split"], rows["index"])]
    np.testing.assert_array_equal(px, np.stack(expected))


def test_digit_test_splits_use_held_out_glyphs(tmp_path):
    embedded.build("digits", {**PARAMS, "pretrain_per_class": 20, "pool_per_class": 10}, seed=1, out_dir=tmp_path)
    table = pd.read_parquet(tmp_path / "factors.parquet")
    cut = embedded.HELD_OUT_GLYPHS[0] * scm.GLYPH_CODES
    seen = table["split"].isin(["pretrain", "train", "val"])
    assert (table.loc[seen, "glyph"] < cut).all()
    assert (table.loc[~seen, "glyph"] >= cut).all()


def test_build_is_deterministic(tmp_path):
    small = {**PARAMS, "pretrain_per_class": 3, "pool_per_class": 3, "test_per_class": 3}
    embedded.build("shapes", small, seed=5, out_dir=tmp_path / "a")
    embedded.build("shapes", small, seed=5, out_dir=tmp_path / "b")
    embedded.build("shapes", small, seed=6, out_dir=tmp_path / "c")
    a, b, c = (DatasetStore.open(tmp_path / n) for n in "abc")
    pd.testing.assert_frame_equal(a.table, b.table)
    for split in a.images:
        np.testing.assert_array_equal(a.images[split], b.images[split])
    assert not a.table[scm.FACTOR_COLUMNS].equals(c.table[scm.FACTOR_COLUMNS])
