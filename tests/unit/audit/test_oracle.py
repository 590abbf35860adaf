"""The audit oracle and the image similarity metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dicap.audit import similarity
from dicap.data import scm

SIZE = 16


# --------------------------------------------------------------------------- similarity

def _random_images(n: int, seed: int = 0, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of one image pair with an explicit loop over windows, straight from the paper."""
    k = similarity.SSIM_WINDOW
    g = similarity.gaussian_window()
    w = np.outer(g, g)
    x, y = a.astype(np.float64) / 255, b.astype(np.float64) / 255
    c1, c2 = similarity.SSIM_K1**2, similarity.SSIM_K2**2
    values = []
    for c in range(x.shape[2]):
        for i in range(x.shape[0] - k + 1):
            for j in range(x.shape[1] - k + 1):
                px, py = x[i:i + k, j:j + k, c], y[i:i + k, j:j + k, c]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
                cov = (w * (px - mx) * (py - my)).sum()
                values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_of_identical_images_is_one():
    imgs = _random_images(5)
    np.testing.assert_allclose(similarity.ssim(imgs, imgs), 1.0, atol=1e-6)
    flat = np.full((2, SIZE, SIZE, 3), 77, np.uint8)  # zero variance: only the constants remain
    np.testing.assert_allclose(similarity.ssim(flat, flat), 1.0, atol=1e-6)


def test_ssim_matches_per_pixel_reference():
    a = scm.render("shapes", 2, scm.sample_factors(np.random.default_rng(3), 1)[0], SIZE)[None]
    b = np.clip(a.astype(int) + np.random.default_rng(4).integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    got = similarity.ssim(a, b)
    assert got.shape == (1,)
    assert got[0] == pytest.approx(_ssim_reference(a[0], b[0]), abs=1e-9)
    assert got[0] < 0.99


def test_ssim_decreases_as_noise_grows():
    rng = np.random.default_rng(0)
    base = np.stack([scm.render("shapes", i, f, SIZE) for i, f in enumerate(scm.sample_factors(rng, 4))])
    noise = rng.normal(size=base.shape)
    scores = []
    for std in (0, 5, 15, 40, 80):
        noisy = np.clip(np.rint(base + std * noise), 0, 255).astype(np.uint8)
        scores.append(similarity.ssim(base, noisy))
    scores = np.stack(scores)  # (levels, images)
    assert np.all(np.diff(scores, axis=0) < 0), scores


def test_ssim_is_vectorised_per_image():
    a, b = _random_images(3, 1), _random_images(3, 2)
    batch = similarity.ssim(a, b)
    single = [similarity.ssim(a[i:i + 1], b[i:i + 1])[0] for i in range(3)]
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-12)
    assert similarity.ssim(a[:0], b[:0]).shape == (0,)


def test_ssim_rejects_images_smaller_than_window():
    tiny = _random_images(1, size=6)
    with pytest.raises(ValueError, match="window"):
        similarity.ssim(tiny, tiny)


def test_mse_known_value_in_model_units():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0] = 255  # every pixel moves from -1 to +1: squared error 4
    b[1, 0, 0, 0] = 255  # one value of 48 moves by 2
    np.testing.assert_allclose(similarity.mse(a, b), [4.0, 4.0 / 48])
    with pytest.raises(TypeError):
        similarity.mse(a.astype(np.float32), b.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        similarity.mse(a, b[:1])


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


def test_oracle_round_trip_gives_identical_predictions(trained, tmp_path):
    import torch

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
