"""The structural causal model, the rendered datasets and the few-shot split."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency

from dicap.data import embedded, scm
from dicap.data.splits import few_shot
from dicap.data.store import DatasetStore

DATASETS = ["shapes", "digits"]
SIZE = 16
PARAMS = {"image_size": 8, "pretrain_per_class": 200, "pool_per_class": 60, "val_per_class": 4, "test_per_class": 40,
          "pretrain_spurious_strength": 0.0}
UNBIASED = ["pretrain", "train", "val", "test_unbiased"]


@pytest.fixture(scope="module", params=DATASETS)
def store(request, tmp_path_factory) -> DatasetStore:
    out = tmp_path_factory.mktemp(f"ds_{request.param}")
    embedded.build(request.param, PARAMS, seed=0, out_dir=out)
    return DatasetStore.open(out)


def _factors(row) -> scm.Factors:
    return scm.Factors(**{c: row[c] for c in scm.FACTOR_COLUMNS})


def _some_factors(n: int, seed: int = 0) -> list[scm.Factors]:
    return scm.sample_factors(np.random.default_rng(seed), n)


# --- rendered datasets: the factors decouple ------------------------------------------------


def test_store_layout(store):
    n_classes = len(store.classes)
    for split, per_class in [("pretrain", 200), ("train", 60), ("val", 4), ("test_unbiased", 40),
                             ("test_backgrounds", 40 * len(scm.BACKGROUNDS))]:
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
        # a uniform's mean over ~300 draws has sd (hi - lo) / sqrt(12 * 300) ~ 0.017 (hi - lo)
        assert (means[col] - (lo + hi) / 2).abs().max() < 0.08 * (hi - lo), col


def test_background_grid_renders_every_object_on_every_background(store):
    """Only the background differs between an object's renders, so any pairing's aligned and
    conflict rows score the very same objects: their gap is the background's effect alone."""
    grid = store.split("test_backgrounds")
    n_bg = len(scm.BACKGROUNDS)
    assert len(grid) == len(store.classes) * 40 * n_bg
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


@pytest.mark.parametrize("seed", range(0, 200, 7))
def test_pairing_is_distinct_within_each_half_and_drawn_per_seed(seed):
    groups = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    pairing = scm.draw_pairing(seed, groups)
    assert pairing == scm.draw_pairing(seed, groups)
    for group in groups:
        assert len({pairing[c] for c in group}) == len(group)
        assert all(0 <= pairing[c] < len(scm.BACKGROUNDS) for c in group)
    for label in (0, 7):  # over seeds, a class is paired with many colours, not a fixed one
        assert len({scm.draw_pairing(s, groups)[label] for s in range(seed, seed + 40)}) >= 6


def test_pairing_refuses_more_classes_than_backgrounds():
    with pytest.raises(ValueError, match="backgrounds"):
        scm.draw_pairing(0, [list(range(len(scm.BACKGROUNDS) + 1))])


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
def test_pretrain_spurious_strength_pairs_pretraining_only(tmp_path, strength):
    params = {**PARAMS, "pretrain_per_class": 80, "pool_per_class": 12, "test_per_class": 8}
    embedded.build("shapes", {**params, "pretrain_spurious_strength": strength}, seed=0, out_dir=tmp_path / "s")
    embedded.build("shapes", params, seed=0, out_dir=tmp_path / "zero")
    biased, plain = DatasetStore.open(tmp_path / "s"), DatasetStore.open(tmp_path / "zero")
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


# --- the true counterfactual ------------------------------------------------------------------


@pytest.mark.parametrize("dataset", DATASETS)
def test_render_is_deterministic(dataset):
    for f in _some_factors(5):
        a = scm.render(dataset, 3, f, SIZE)
        b = scm.render(dataset, 3, scm.Factors(**f.__dict__), SIZE)
        assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dataset", DATASETS)
def test_counterfactual_is_render_with_other_class(dataset):
    for f, y_cf in zip(_some_factors(6, seed=1), [0, 2, 4, 6, 8, 9]):
        np.testing.assert_array_equal(scm.render_counterfactual(dataset, y_cf, f, SIZE), scm.render(dataset, y_cf, f, SIZE))


@pytest.mark.parametrize("dataset", DATASETS)
def test_counterfactual_keeps_background_pixels(dataset):
    for f in _some_factors(4, seed=2):
        for y, y_cf in [(0, 1), (3, 7), (9, 2)]:
            fact = scm.render(dataset, y, f, SIZE)
            cf = scm.render_counterfactual(dataset, y_cf, f, SIZE)
            free = (scm._coverage(dataset, y, f, SIZE) == 0) & (scm._coverage(dataset, y_cf, f, SIZE) == 0)
            assert free.sum() > SIZE  # there is a background to compare
            np.testing.assert_array_equal(fact[free], cf[free])
            # the background is the sampled background colour (up to pixel noise)
            bg = np.asarray(scm.BACKGROUNDS[scm.BACKGROUND_NAMES[f.bg]], float)
            assert np.abs(fact[free].astype(float).mean(0) - bg).max() < 3
            assert not np.array_equal(fact, cf)


@pytest.mark.parametrize("dataset", DATASETS)
def test_counterfactual_differs_for_every_other_class(dataset):
    n = len(scm.class_names(dataset))
    for f in _some_factors(3, seed=3):
        imgs = [scm.render(dataset, y, f, SIZE) for y in range(n)]
        for y, y_cf in itertools.permutations(range(n), 2):
            assert not np.array_equal(imgs[y], imgs[y_cf]), (y, y_cf)


@pytest.mark.parametrize("dataset", DATASETS)
def test_changing_a_non_causal_factor_changes_the_image(dataset):
    f = _some_factors(1, seed=4)[0]
    base = scm.render(dataset, 1, f, SIZE)
    for change in [{"bg": (f.bg + 1) % 8}, {"fg": (f.fg + 1) % 8}, {"noise_seed": f.noise_seed + 1}]:
        assert not np.array_equal(base, scm.render(dataset, 1, scm.Factors(**{**f.__dict__, **change}), SIZE)), change


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
