"""The domain-generalization store (data/shifts.py): one split per shift, the same objects in each,
each split moving its own factor, and only it, to values no other store shows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dicap.data import embedded, scm, shifts
from dicap.data.store import DatasetStore
from dicap.io import read_json

PARAMS = {"image_size": 16, "downstream_style": "faded"}
PER_CLASS = 3
# The columns each shift may change (noise_std is a render argument the table records beside the factors).
MOVES = {shifts.UNSHIFTED: set(), "background": {"bg"}, "object_colour": {"fg"}, "style": {"style"}, "noise": {"noise_std"}}
COMPARED = [*scm.FACTOR_COLUMNS, "noise_std", "label", "class_name", "index"]


@pytest.fixture(scope="module", params=["shapes", "digits"])
def store(request, tmp_path_factory) -> DatasetStore:
    out = tmp_path_factory.mktemp(f"shifts_{request.param}")
    shifts.build(request.param, PARAMS, 4, out, shifts.SHIFTS, PER_CLASS)
    return DatasetStore.open(out)


def test_one_split_per_shift_after_the_unshifted_one_read_back_as_the_test_splits(store):
    assert store.test_splits == [shifts.UNSHIFTED, *shifts.SHIFTS]
    info = read_json(store.root / "classes.json")
    assert info["classes"] == scm.class_names(store.dataset) and info["render_seed"] == 4 and info["image_size"] == 16
    assert "world_pairing" not in info and set(store.images) == {shifts.UNSHIFTED, *shifts.SHIFTS}
    for shift in [shifts.UNSHIFTED, *shifts.SHIFTS]:
        rows = store.split(shift)
        assert store.images[shift].shape == (len(store.classes) * PER_CLASS, 16, 16, 3)
        assert np.bincount(rows["label"]).tolist() == [PER_CLASS] * len(store.classes)


ALL_SPLITS = (shifts.UNSHIFTED, *shifts.SHIFTS)


@pytest.mark.parametrize(("a", "b"), [(a, b) for i, a in enumerate(ALL_SPLITS) for b in ALL_SPLITS[i + 1:]])
def test_two_shifts_differ_in_their_own_factors_only(store, a, b):
    """The same objects in every split: between two splits only the two shifted factors differ."""
    rows_a, rows_b = store.split(a)[COMPARED], store.split(b)[COMPARED]
    differs = {c for c in COMPARED if not rows_a[c].equals(rows_b[c])}
    assert differs == MOVES[a] | MOVES[b]
    for shift, rows, other in ((a, rows_a, rows_b), (b, rows_b, rows_a)):
        for column in MOVES[shift]:  # moved on every object, not just some
            assert (rows[column] != other[column]).all(), (shift, column)


def test_each_shift_moves_its_factor_to_values_no_other_store_shows(store):
    seen_style = scm.STYLES.index(PARAMS["downstream_style"])
    for shift in ALL_SPLITS:
        rows = store.split(shift)
        unseen = {"bg": rows["bg"] >= scm.LEVELS, "fg": rows["fg"] >= scm.LEVELS,
                  "style": rows["style"] != seen_style, "noise_std": rows["noise_std"] == scm.UNSEEN_NOISE_STD}
        for column, mask in unseen.items():
            assert mask.all() if column in MOVES[shift] else not mask.any(), (shift, column)
    assert set(store.split("style")["style"]) == {scm.STYLES.index("outline")}
    assert (store.split("background")["bg"] < 2 * scm.LEVELS).all() and store.split("background")["bg"].nunique() > 1
    cut = embedded.HELD_OUT_GLYPHS[0] * scm.GLYPH_CODES
    assert (store.table["glyph"] >= cut).all()  # handwriting no model has seen, as the main test splits


def test_stored_factors_render_the_stored_pixels(store):
    for shift in shifts.SHIFTS:
        rows = store.split(shift)
        for i in range(0, len(rows), 7):
            row = rows.iloc[i]
            f = scm.Factors(**{c: row[c] for c in scm.FACTOR_COLUMNS})
            img = scm.render(store.dataset, int(row["label"]), f, 16, float(row["noise_std"]))
            np.testing.assert_array_equal(img, store.images[shift][int(row["index"])])


def test_the_build_is_deterministic_and_a_split_the_same_in_any_selection(tmp_path):
    shifts.build("shapes", PARAMS, 4, tmp_path / "a", shifts.SHIFTS, PER_CLASS)
    shifts.build("shapes", PARAMS, 4, tmp_path / "b", ["noise", "background"], PER_CLASS)
    shifts.build("shapes", PARAMS, 5, tmp_path / "c", shifts.SHIFTS, PER_CLASS)
    a, b, c = (DatasetStore.open(tmp_path / n) for n in "abc")
    assert b.test_splits == [shifts.UNSHIFTED, "noise", "background"]
    for split in b.test_splits:
        pd.testing.assert_frame_equal(a.split(split), b.split(split))
        np.testing.assert_array_equal(a.images[split], b.images[split])
    assert not a.table[scm.FACTOR_COLUMNS].equals(c.table[scm.FACTOR_COLUMNS])


def test_the_shift_store_draws_none_of_the_main_stores_objects(tmp_path):
    """Its own generator: no test object repeats the main store's (so neither changes the other)."""
    sizes = {"image_size": 8, "pretrain_per_class": 2, "pool_per_class": 2, "val_per_class": 1, "test_per_class": PER_CLASS}
    embedded.build("shapes", sizes, 4, tmp_path / "main")
    shifts.build("shapes", {"image_size": 8}, 4, tmp_path / "dg", ["noise"], PER_CLASS)
    main, dg = DatasetStore.open(tmp_path / "main"), DatasetStore.open(tmp_path / "dg")
    assert not set(main.table["noise_seed"]) & set(dg.table["noise_seed"])
    assert main.test_splits == ["test_unbiased", "test_backgrounds"]  # a store without test_splits reads as before


@pytest.mark.parametrize(("downstream", "style"), [("faded", "outline"), ("photo", "outline"), ("outline", "negative")])
def test_the_style_shift_takes_a_style_neither_pretraining_nor_downstream_shows(downstream, style):
    assert shifts.shift_style(downstream) == style


@pytest.mark.parametrize(("asked", "message"), [
    (["background", "blur"], "unknown shift 'blur'; known: background, object_colour, style, noise"),
    (["noise", "noise"], "at most once"),
    ([], "at least one"),
])
def test_a_bad_shift_list_is_refused_in_one_line_before_rendering(tmp_path, asked, message):
    with pytest.raises(ValueError, match=message) as err:
        shifts.build("shapes", PARAMS, 0, tmp_path, asked, PER_CLASS)
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())
