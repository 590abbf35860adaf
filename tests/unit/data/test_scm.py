"""The structural causal model (data/scm.py): the background pairing, deterministic renders, the
true counterfactual (the same non-causal factors, another class), and the spurious factor's levels."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from dicap.data import scm

DATASETS = ["shapes", "digits"]
SIZE = 16


def _some_factors(n: int, seed: int = 0) -> list[scm.Factors]:
    return scm.sample_factors(np.random.default_rng(seed), n)


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


def test_pairing_refuses_more_classes_than_levels():
    with pytest.raises(ValueError, match="levels of the spurious factor"):
        scm.draw_pairing(0, [list(range(len(scm.BACKGROUNDS) + 1))])


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


NO_NOISE = {"template_variety": 0.0, "synonym_share": 0.0, "unnamed_share": 0.0, "label_noise": 0.0}


@pytest.mark.parametrize("dataset", ["shapes", "digits"])
def test_web_captions_without_noise_are_the_plain_captions(dataset):
    factors = scm.sample_factors(np.random.default_rng(3), 40)
    for i, f in enumerate(factors):
        assert scm.web_caption(dataset, i % 10, f, NO_NOISE) == scm.caption(dataset, i % 10, f)


@pytest.mark.parametrize("share", [0.1, 0.3, 0.6])
def test_web_caption_noise_follows_its_shares(share):
    """Each share is a probability per caption: over many images the counts follow it."""
    factors = scm.sample_factors(np.random.default_rng(4), 2000)
    names = scm.class_names("shapes")
    wrong = sum(names[1] not in scm.web_caption("shapes", 1, f, {"label_noise": share}) for f in factors)  # no other name holds "square"
    unnamed = sum(" object" in scm.web_caption("shapes", 0, f, {"unnamed_share": share}) for f in factors)
    for count in (wrong, unnamed):
        assert abs(count / len(factors) - share) < 0.05


def test_a_styled_image_names_its_style_and_keeps_its_object():
    f = scm.sample_factors(np.random.default_rng(5), 1)[0]
    photo = scm.render("shapes", 0, f, 16).astype(float)
    for style in scm.STYLES[1:]:
        styled = scm.Factors(**{**f.__dict__, "style": scm.STYLES.index(style)})
        assert scm.web_caption("shapes", 0, styled, NO_NOISE).startswith(scm.STYLE_PHRASES[style])
        image = scm.render("shapes", 0, styled, 16).astype(float)
        assert np.abs(image - photo).mean() > 5  # a visible shift ...
        other = scm.render("shapes", 1, styled, 16).astype(float)
        assert np.abs(image - other).mean() > 1  # ... that still shows which object it is


# --- the spurious factor: its levels --------------------------------------------------------------

FIELDS = {"background": {"bg"}, "object_colour": {"fg"}, "scale": {"scale"}, "position": {"cx"}}


@pytest.mark.parametrize("factor", scm.SPURIOUS_FACTORS)
def test_at_level_sets_that_level_and_nothing_else(factor):
    for f in _some_factors(12, seed=3):
        moved = [scm.at_level(factor, f, level) for level in range(scm.LEVELS)]
        table = pd.DataFrame([m.__dict__ for m in moved])
        assert scm.factor_levels(factor, table).tolist() == list(range(scm.LEVELS))
        changed = {k for m in moved for k, v in m.__dict__.items() if v != f.__dict__[k]}
        assert changed <= FIELDS[factor]


@pytest.mark.parametrize("factor", scm.SPURIOUS_FACTORS)
def test_drawn_factors_spread_over_every_level(factor):
    table = pd.DataFrame([f.__dict__ for f in _some_factors(800)])
    levels = scm.factor_levels(factor, table)
    assert levels.dtype == np.int64
    assert np.bincount(levels, minlength=scm.LEVELS).min() > 800 / scm.LEVELS / 2  # each level a fair share


def test_the_background_level_is_the_background_column():
    table = pd.DataFrame([f.__dict__ for f in _some_factors(50, seed=1)])
    np.testing.assert_array_equal(scm.factor_levels("background", table), table["bg"].to_numpy())


@pytest.mark.parametrize("factor", ["colour", "bg", ""])
def test_an_unknown_spurious_factor_is_refused_by_name(factor):
    with pytest.raises(ValueError, match="data.spurious_factor"):
        scm.check_factor(factor)


# --- the unseen palettes (the shift store's colours): distinct, the same rule, old renders untouched ------

# sha256 (first 16 hex) of renders computed before the unseen palettes and render's noise_std existed:
# (dataset, label, size) x every style, factors from _pinned_factors.
PINNED_RENDERS = {
    ("shapes", 0, 16): ["307180b22b625398", "0270cecd6cc48bf5", "23dce2471c0f8e77", "c612228d3609ddfa"],
    ("shapes", 7, 24): ["320bc6ec388ca7e0", "6a497c125aa1e2e5", "d205a1944e4ea72f", "27590d4b46cfabf3"],
    ("digits", 3, 16): ["6faf03fae52a1b4c", "dd5dffd5c81db3cf", "c721499d0e023fc6", "09a7bd860569001e"],
    ("digits", 9, 32): ["4552d88a9f6875be", "b39190af5ced290e", "043c170284824635", "9f9e01e9dbee2f70"],
}


def _pinned_factors(i: int, style: int) -> scm.Factors:
    return scm.Factors(bg=(i * 3 + style) % 8, fg=(i + 2 * style) % 8, cx=0.05 * (i - 1.5), cy=-0.03 * style,
                       scale=0.6 + 0.05 * i, texture=0.05 * style, noise_seed=1000 * i + style,
                       glyph=1234 * (i + 1) + style, style=style)


@pytest.mark.parametrize(("i", "case"), list(enumerate(PINNED_RENDERS)))
def test_every_existing_render_is_bit_identical(i, case):
    import hashlib

    dataset, label, size = case
    got = [hashlib.sha256(scm.render(dataset, label, _pinned_factors(i, style), size).tobytes()).hexdigest()[:16]
           for style in range(len(scm.STYLES))]
    assert got == PINNED_RENDERS[case]


def _luminance(colour) -> float:
    return float(np.dot(colour, [0.299, 0.587, 0.114]))


@pytest.mark.parametrize(("unseen", "seen", "dark"), [(scm.UNSEEN_BACKGROUNDS, scm.BACKGROUNDS, True),
                                                     (scm.UNSEEN_OBJECTS, scm.OBJECTS, False)])
def test_unseen_colours_are_distinct_from_every_seen_one_and_keep_the_contrast_rule(unseen, seen, dark):
    assert len(unseen) == scm.LEVELS and not set(unseen) & {*scm.BACKGROUNDS, *scm.OBJECTS}
    every_seen = np.array([*scm.BACKGROUNDS.values(), *scm.OBJECTS.values()], np.float64)
    for name, colour in unseen.items():
        assert np.linalg.norm(every_seen - colour, axis=1).min() >= scm.UNSEEN_MIN_DISTANCE, name
        if dark:  # no brighter than the brightest seen background: every object keeps its contrast
            assert _luminance(colour) <= max(map(_luminance, seen.values())), name
        else:
            assert _luminance(colour) >= min(map(_luminance, seen.values())), name
    assert len(set(unseen.values())) == scm.LEVELS


@pytest.mark.parametrize(("field", "palette"), [("bg", scm.UNSEEN_BACKGROUNDS), ("fg", scm.UNSEEN_OBJECTS)])
def test_an_index_past_the_seen_levels_renders_the_unseen_colour(field, palette):
    """At scale ~0 nothing covers the canvas, so every pixel is the background; a square scaled
    past the canvas covers all of it, so every pixel is the object's colour."""
    for i, colour in enumerate(palette.values()):
        f = scm.Factors(bg=0, fg=0, cx=0.0, cy=0.0, scale=1e-6 if field == "bg" else 5.0, texture=0.0, noise_seed=i)
        img = scm.render("shapes", 1, scm.Factors(**{**f.__dict__, field: scm.LEVELS + i}), SIZE, noise_std=0.0)
        assert (img.reshape(-1, 3) == colour).all()
    names = scm.ALL_BACKGROUND_NAMES if field == "bg" else scm.ALL_OBJECT_NAMES
    assert names[scm.LEVELS:] == list(palette)


@pytest.mark.parametrize("noise_std", [0.0, scm.PIXEL_NOISE_STD, scm.UNSEEN_NOISE_STD])
def test_render_noise_std_scales_the_pixel_noise(noise_std):
    f = scm.Factors(bg=6, fg=0, cx=0.0, cy=0.0, scale=1e-6, texture=0.0, noise_seed=3)  # slate: no clipping at 0
    img = scm.render("shapes", 0, f, 64, noise_std=noise_std).astype(np.float64)
    assert abs(img.std(axis=(0, 1)).mean() - noise_std) < 0.1 * noise_std + 0.5
    if noise_std == scm.PIXEL_NOISE_STD:
        np.testing.assert_array_equal(img, scm.render("shapes", 0, f, 64))
