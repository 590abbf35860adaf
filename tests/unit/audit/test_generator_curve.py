"""The generator curve (audit/generator_curve.py) on the audit's tiny rendered world, a tiny random
16 px UNet and the tiny stand-in CLIP: which images and targets it takes, one row per image and
setting with the audit's columns, the same numbers twice, and an action at s = 0 that ignores
``y_cf`` as classifier-free guidance says it must."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dicap.audit.divergence import cosine_distance
from dicap.audit.generator_curve import curve_rows, generator_curve
from dicap.counterfactual.generate import true_counterfactuals
from dicap.counterfactual.sampling import choose_targets

pytestmark = pytest.mark.usefixtures("single_thread")

COLUMNS = ["row", "y", "y_cf", "guidance_scale", "inversion_depth", "oracle_label", "no_object", "valid", "kept_background",
           "kept_object_colour", "kept_position", "kept_scale", "valid_bg_kept", "faithful", "clip_cosine_to_true",
           "factual_clip_cosine_to_true"]


@pytest.fixture(scope="module")
def diffusion16():
    """A tiny random class-conditional pixel UNet at the world's size (16 px, 10 classes)."""
    import torch

    from dicap.backbones.diffusion import DiffusionBundle, build_unet, make_schedule

    torch.manual_seed(0)
    unet = build_unet(image_size=16, n_classes=10, model_cfg={"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4})
    return DiffusionBundle(unet.requires_grad_(False).eval(), make_schedule(1000), 10)


@pytest.mark.parametrize("n", [1, 4, 7, 30, 45])
def test_curve_rows_spread_over_the_split_each_towards_another_base_class(world, n):
    store, split = world[0], world[1]
    rows, targets = curve_rows(split, n, store.base_classes, 1, "random")
    assert len(rows) == len(targets) == min(n, len(split))
    assert rows["row"].is_unique and rows["row"].is_monotonic_increasing
    assert rows["row"].iloc[0] == 0 and (n == 1 or rows["row"].iloc[-1] == len(split) - 1)  # both ends: the whole split
    pd.testing.assert_frame_equal(rows.drop(columns="row"), split.iloc[rows["row"]].reset_index(drop=True))
    assert set(targets) <= set(store.base_classes) and (targets != rows["label"].to_numpy()).all()
    again_rows, again = curve_rows(split, n, store.base_classes, 1, "random")
    np.testing.assert_array_equal(targets, again)
    pd.testing.assert_frame_equal(rows, again_rows)


@pytest.mark.parametrize("strategy", ["random", "similarity", "centroid"])
@pytest.mark.parametrize("n", [3, 9])
def test_curve_rows_pair_each_image_with_the_shards_target(world, strategy, n):
    """The curve's pairs are the run's: targets drawn over the whole split by the config's
    sampling, as the counterfactual shards draw them, then the picked rows' (a random class
    where the run takes the nearest one made the curve's cosines incomparable with the audit's)."""
    store, split = world[0], world[1]
    split = split[split["label"].isin(store.base_classes)].reset_index(drop=True)  # a few-shot split's classes
    rng = np.random.default_rng(n)
    text, images = rng.normal(size=(len(store.classes), 8)), rng.normal(size=(len(split), 8))
    rows, targets = curve_rows(split, n, store.base_classes, 2, strategy, text, images)
    run = choose_targets(split["label"].to_numpy(), store.base_classes, strategy, 2, text, images)
    np.testing.assert_array_equal(targets, run[rows["row"].to_numpy()])


def test_curve_rows_refuse_no_images(world):
    with pytest.raises(ValueError, match="report.curve_images must be at least 1"):
        curve_rows(world[1], 0, world[0].base_classes, 1, "random")


def _curve(world, clip, diffusion, targets=None, rows=6, batch_size=4):
    from dicap.backbones.guides import ClassifierFreeGuide

    store, split, *_, oracle = world
    picked, drawn = curve_rows(split, rows, store.base_classes, 1, "random")
    targets = drawn if targets is None else targets
    frame = generator_curve(store, picked, targets, diffusion, ClassifierFreeGuide(diffusion), oracle, clip, [0.0, 2.0, 5.0],
                            [0.5, 0.8], steps=4, batch_size=batch_size)
    return store, picked, targets, frame


def test_one_row_per_image_and_setting_with_the_audits_columns(world, clip, diffusion16):
    store, rows, targets, frame = _curve(world, clip, diffusion16)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == len(rows) * 3 * 2
    settings = frame.groupby(["guidance_scale", "inversion_depth"])
    assert settings.ngroups == 6 and (settings.size() == len(rows)).all()
    for _, part in settings:
        np.testing.assert_array_equal(part["row"], rows["row"])
        np.testing.assert_array_equal(part["y_cf"], targets)
    # the reference line: the factual image against the truth, the same at every setting
    truth = clip.encode_images(true_counterfactuals(store, rows, targets)).numpy()
    factual = 1 - cosine_distance(clip.encode_images(store.pixels(rows)).numpy(), truth)
    for _, part in settings:
        np.testing.assert_allclose(part["factual_clip_cosine_to_true"], factual, rtol=1e-6)
    assert frame["clip_cosine_to_true"].between(-1 - 1e-6, 1 + 1e-6).all()
    assert (frame["faithful"] <= frame["valid_bg_kept"]).all() and (frame["valid_bg_kept"] <= frame["valid"]).all()
    assert (frame["valid"] == (frame["oracle_label"] == frame["y_cf"])).all()


def test_the_curve_is_deterministic(world, clip, diffusion16):
    first = _curve(world, clip, diffusion16)[-1]
    pd.testing.assert_frame_equal(first, _curve(world, clip, diffusion16)[-1])


def test_at_scale_zero_the_action_ignores_the_target(world, clip, diffusion16):
    """Classifier-free guidance at s = 0 is the marginal score alone: other targets, the same images."""
    store, rows, targets, frame = _curve(world, clip, diffusion16)
    others = np.array([next(c for c in store.base_classes if c not in (y, t)) for y, t in zip(rows["label"], targets)])
    moved = _curve(world, clip, diffusion16, targets=others)[-1]
    at_zero, moved_zero = frame[frame["guidance_scale"] == 0], moved[moved["guidance_scale"] == 0]
    np.testing.assert_array_equal(at_zero["oracle_label"], moved_zero["oracle_label"])
    np.testing.assert_array_equal(at_zero["valid"], at_zero["oracle_label"] == np.tile(targets, 2))
    np.testing.assert_array_equal(moved_zero["valid"], moved_zero["oracle_label"] == np.tile(others, 2))
