"""The image similarity metrics (audit/similarity.py): SSIM against a per-window reference
straight from the paper, and MSE in model units."""

from __future__ import annotations

import numpy as np
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
