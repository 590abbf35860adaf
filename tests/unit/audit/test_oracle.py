"""The audit oracle (audit/oracle.py): factor agreement within pixel tolerances, the objectless
renders, a briefly trained oracle that learns class and background and reads blank and noise
images as "no object", its saved checkpoint read back, and checkpoints that are not safetensors
or do not fit refused by path."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from dicap.audit.oracle import OracleNet, load_oracle
from dicap.data import scm
from dicap.io import save_state_dict

SIZE = 16


# --------------------------------------------------------------------------- factor agreement

def test_factor_agreement_pixel_tolerances():
    from dicap.audit.oracle import factor_agreement

    truth = pd.DataFrame({"bg": [1, 1, 1, 1, 1], "fg": [2, 2, 2, 2, 3],
                          "cx": [0.0] * 5, "cy": [0.0] * 5, "scale": [0.7] * 5})
    px = 1.0 / SIZE
    pred = pd.DataFrame({
        "bg": [1, 0, 1, 1, 1], "fg": [2, 2, 2, 2, 2],
        # exactly 1 px along x; 1 px along y; 0.6/0.8 px diagonal = exactly 1 px; 1.5 px; 0
        "cx": [px, 0.0, 0.6 * px, 1.5 * px, 0.0],
        "cy": [0.0, px, 0.8 * px, 0.0, 0.0],
        # extent: exactly 1 px larger, 1 px smaller, 0, 1.5 px, 0
        "scale": [0.7 + px, 0.7 - px, 0.7, 0.7 + 1.5 * px, 0.7],
    })
    agree = factor_agreement(pred, truth, SIZE)
    assert list(agree.columns) == ["background", "object_colour", "position", "scale"]
    assert agree["background"].tolist() == [True, False, True, True, True]
    assert agree["object_colour"].tolist() == [True, True, True, True, False]
    assert agree["position"].tolist() == [True, True, True, False, True]
    assert agree["scale"].tolist() == [True, True, True, False, True]
    with pytest.raises(ValueError):
        factor_agreement(pred, truth.iloc[:2], SIZE)


# --------------------------------------------------------------------------- oracle

TRAIN = {"steps": 300, "batch_size": 64, "lr": 3e-3, "width": 16, "noise_std": 0.05}


def _render(n_per_class: int, seed: int, glyph_range=(0.0, 0.8)) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n_per_class)
    factors = scm.sample_factors(rng, len(labels), glyph_range)
    images = np.stack([scm.render("shapes", int(y), f, SIZE) for y, f in zip(labels, factors)])
    return images, pd.DataFrame([{"label": int(y), **f.__dict__} for y, f in zip(labels, factors)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, single_thread):
    from dicap.audit.oracle import train_oracle

    images, table = _render(60, seed=0)
    out = tmp_path_factory.mktemp("oracle")
    losses = train_oracle(images, table, 10, TRAIN, out, seed=0)
    return out, losses


def test_oracle_learns_class_and_background(trained):
    from dicap.audit.oracle import held_out_report, load_oracle

    out, losses = trained
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    images, table = _render(20, seed=1)
    report = held_out_report(load_oracle(out), images, table, SIZE)
    assert report["n"] == 200
    # chance is 0.10 for class, 0.125 for colours
    assert report["class_accuracy"] >= 0.6, report
    assert report["background"] >= 0.8, report
    assert report["object_colour"] >= 0.8, report
    assert report["no_object_recall"] >= 0.9, report


def _blank_and_noise(seed: int) -> np.ndarray:
    """Every background colour with the SCM's pixel noise, and uniform noise: no object anywhere."""
    rng = np.random.default_rng(seed)
    blank = [np.asarray(c, float) + rng.normal(0, scm.PIXEL_NOISE_STD, (SIZE, SIZE, 3)) for c in scm.BACKGROUNDS.values()]
    noise = [rng.uniform(0, 255, (SIZE, SIZE, 3)) for _ in range(8)]
    return np.clip(np.rint(np.stack(blank + noise)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_blank_and_noise_images_are_no_object_hence_never_valid(trained, seed):
    from dicap.audit.oracle import label_name, load_oracle, predict

    oracle = load_oracle(trained[0])
    pred = predict(oracle, _blank_and_noise(seed))
    assert (pred["label"] == oracle.n_classes).all(), pred["label"].tolist()
    assert {label_name(scm.class_names("shapes"), int(y)) for y in pred["label"]} == {"no object"}
    for y_cf in range(oracle.n_classes):  # valid means the oracle reads y_cf: no target class ever matches
        assert not (pred["label"] == y_cf).any()
    # while the renders of objects are read as classes, never as "no object"
    images, _ = _render(5, seed=seed)
    assert (predict(oracle, images)["label"] < oracle.n_classes).mean() >= 0.95


def test_objectless_images_are_deterministic_and_of_every_kind():
    from dicap.audit.oracle import OBJECTLESS_KINDS, objectless_images

    first, again, other = objectless_images(12, SIZE, 0), objectless_images(12, SIZE, 0), objectless_images(12, SIZE, 1)
    assert first.shape == (12, SIZE, SIZE, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    spread = first.astype(float).std(axis=(1, 2)).mean(axis=1)  # per image: pixel spread within a channel
    kinds = np.arange(12) % len(OBJECTLESS_KINDS)
    blank, noise = spread[kinds == 0], spread[kinds == 1]
    stripes = spread[kinds >= 2]
    assert blank.max() < 25 and noise.min() > 50 and stripes.min() > 10
    # horizontal stripes are constant along each row; diagonal ones are not
    horizontal = first[kinds == 3].astype(float)
    assert horizontal.std(axis=2).mean() < scm.PIXEL_NOISE_STD * 1.5
    assert first[kinds == 2].astype(float).std(axis=2).mean() > 10


def test_oracle_round_trip_gives_identical_predictions(trained, tmp_path):

    from dicap.audit.oracle import OracleNet, load_oracle, predict

    out, _ = trained
    images, _ = _render(3, seed=2)
    first, second = load_oracle(out), load_oracle(out)
    assert not any(p.requires_grad for p in first.parameters())
    a, b = predict(first, images), predict(second, images)
    pd.testing.assert_frame_equal(a, b)
    # batching changes only float rounding, never a reading
    pd.testing.assert_frame_equal(predict(first, images, batch_size=7), a, check_exact=False, atol=1e-5)
    assert a["label_confidence"].between(0, 1).all()
    assert a["scale"].between(0.3, 1.1).all()  # de-normalised into scm units
    # a fresh, untrained net reads the images differently: the weights really were loaded
    torch.manual_seed(123)
    assert not predict(OracleNet(10, SIZE, TRAIN["width"]).eval(), images).equals(a)


def test_predict_on_no_images_returns_empty_frame(trained):
    from dicap.audit.oracle import PREDICTION_COLUMNS, load_oracle, predict

    pred = predict(load_oracle(trained[0]), np.zeros((0, SIZE, SIZE, 3), np.uint8))
    assert pred.empty and list(pred.columns) == PREDICTION_COLUMNS
    assert pred["label"].dtype == np.int64


def test_oracle_training_is_deterministic(tmp_path, single_thread):
    from dicap.audit.oracle import train_oracle

    images, table = _render(4, seed=5)
    params = {**TRAIN, "steps": 15, "batch_size": 16}
    first = train_oracle(images, table, 10, params, tmp_path / "a", seed=7)
    second = train_oracle(images, table, 10, params, tmp_path / "b", seed=7)
    other = train_oracle(images, table, 10, params, tmp_path / "c", seed=8)
    assert first == second
    assert first != other
    assert (tmp_path / "a" / "oracle.safetensors").read_bytes() == (tmp_path / "b" / "oracle.safetensors").read_bytes()


def test_load_oracle_names_missing_path(tmp_path):
    from dicap.audit.oracle import load_oracle

    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_oracle(tmp_path / "nowhere")


def test_oracle_rejects_size_not_divisible_by_four():
    from dicap.audit.oracle import OracleNet

    with pytest.raises(ValueError, match="divisible by 4"):
        OracleNet(10, image_size=18)


def test_a_checkpoint_that_is_not_safetensors(tmp_path):
    (tmp_path / "oracle.json").write_text(json.dumps({"n_classes": 10, "width": 8, "image_size": 16}))
    (tmp_path / "oracle.safetensors").write_bytes(b"\x80\x04 a pickle, not safetensors")
    with pytest.raises(ValueError, match="oracle.safetensors is not a readable safetensors file"):
        load_oracle(tmp_path)


def test_a_checkpoint_with_wrong_shapes(tmp_path):
    save_state_dict(tmp_path / "oracle.safetensors", OracleNet(5, 16, 8))  # five classes (and no object), not ten
    (tmp_path / "oracle.json").write_text(json.dumps({"n_classes": 10, "width": 8, "image_size": 16}))
    with pytest.raises(ValueError, match=r"oracle.safetensors does not fit OracleNet: .*shape \(6, 32\), expected \(11, 32\)"):
        load_oracle(tmp_path)
