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


# --- the spurious factor (data.spurious_factor): what the paired renders and the draw vary -----------

FACTOR_PARAMS = {**PARAMS, "pretrain_per_class": 16, "pool_per_class": 120, "val_per_class": 1, "test_per_class": 2}
FACTOR_FIELDS = {"background": ["bg"], "object_colour": ["fg"], "scale": ["scale"], "position": ["cx"]}


@pytest.fixture(scope="module", params=scm.SPURIOUS_FACTORS)
def factor_store(request, tmp_path_factory) -> DatasetStore:
    """Tiny shapes, every pretraining image paired, with the shortcut on one factor."""
    out = tmp_path_factory.mktemp(f"factor_{request.param}")
    params = {**FACTOR_PARAMS, "spurious_factor": request.param, "pretrain_spurious_strength": 1.0}
    embedded.build("shapes", params, seed=0, out_dir=out)
    return DatasetStore.open(out)


def test_the_store_names_its_spurious_factor(factor_store):
    """classes.json names a factor other than the background; none reads as the background."""
    info = pd.read_json(factor_store.root / "classes.json", typ="series")
    assert ("spurious_factor" in info) == (factor_store.spurious_factor != "background")
    assert factor_store.spurious_factor in scm.SPURIOUS_FACTORS


def test_the_paired_grid_renders_every_object_at_every_level_of_the_factor(factor_store):
    """Only the spurious factor differs between an object's renders, so aligned and conflict
    rows score the same objects, and the stored factors still render the stored pixels."""
    factor, grid = factor_store.spurious_factor, factor_store.split("test_backgrounds")
    assert len(grid) == len(factor_store.classes) * FACTOR_PARAMS["test_per_class"] * scm.LEVELS
    levels = factor_store.spurious_levels(grid).reshape(-1, scm.LEVELS)
    assert (np.sort(levels, axis=1) == np.arange(scm.LEVELS)).all()
    for _, rows in grid.groupby(np.arange(len(grid)) // scm.LEVELS):
        assert rows.drop(columns=FACTOR_FIELDS[factor] + ["index", "caption"]).nunique().max() == 1
    for i in range(0, len(grid), 11):
        row = grid.iloc[i]
        np.testing.assert_array_equal(scm.render("shapes", int(row["label"]), _factors(row), PARAMS["image_size"]),
                                      factor_store.images["test_backgrounds"][int(row["index"])])


def test_pretraining_pairs_each_class_with_its_level_of_the_factor(factor_store):
    pre = factor_store.split("pretrain")
    world = factor_store.pairing(1)
    assert (factor_store.spurious_levels(pre) == pre["label"].map(lambda c: world[c]).to_numpy()).all()


@pytest.mark.parametrize("strength", [1 / 3, 1.0])
def test_the_few_shot_draw_pairs_each_class_with_its_level_of_the_factor(factor_store, strength):
    from dicap.data.splits import training_split

    shots = 3
    for seed in (1, 2):
        split = training_split(factor_store, shots, seed, strength)
        pairing = factor_store.pairing(seed)
        assert split.groupby("label").size().tolist() == [shots] * len(factor_store.base_classes)
        paired = factor_store.spurious_levels(split) == split["label"].map(lambda c: pairing[c]).to_numpy()
        assert pd.Series(paired).groupby(split["label"].to_numpy()).sum().tolist() == [round(strength * shots)] * len(
            factor_store.base_classes)


def test_an_unknown_spurious_factor_is_refused_before_rendering(tmp_path):
    with pytest.raises(ValueError, match="data.spurious_factor 'colour'"):
        embedded.build("shapes", {**FACTOR_PARAMS, "spurious_factor": "colour"}, seed=0, out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_build_reads_exactly_its_render_keys(tmp_path):
    """prepare_dataset's params are RENDER_KEYS (plan.Plan.data_params): every key the renderer
    reads is among them (or a change would not re-render) and it reads every one of them (or a
    change would re-render for nothing, as shots and spurious_strength once did)."""
    from dicap.jobs.data import prepare_dataset

    class Reads(dict):
        seen: set[str] = set()

        def __getitem__(self, key):
            self.seen.add(key)
            return super().__getitem__(key)

        def get(self, key, default=None):
            self.seen.add(key)
            return super().get(key, default)

    params = Reads({**FACTOR_PARAMS, "pretrain_per_class": 2, "pool_per_class": 2, "render_seed": 0,
                    "shots": 16, "spurious_strength": 0.9})
    prepare_dataset("shapes", params, tmp_path)
    assert Reads.seen == set(embedded.RENDER_KEYS)
