"""DDIM inversion / regeneration on a tiny random UNet, the guides, and shard bookkeeping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dicap.backbones.diffusion import DiffusionBundle, build_unet, make_schedule, model_to_pixels, pixels_to_model
from dicap.backbones.guides import ClassifierFreeGuide, NoisyClassifier, NoisyClassifierGuide
from dicap.counterfactual import shards
from dicap.counterfactual.ddim import ddim_move, invert, reconstruct, regenerate, timestep_path

T = 1000


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def diffusion() -> DiffusionBundle:
    torch.manual_seed(0)
    unet = build_unet(image_size=8, n_classes=3, model_cfg={"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4})
    unet.requires_grad_(False)
    return DiffusionBundle(unet.eval(), make_schedule(T), 3)


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, 8, 8, generator=gen) * 2 - 1, torch.tensor([0, 1, 2])


def _rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


# --- schedule and path ---------------------------------------------------------------------------


def test_schedule_is_decreasing_in_unit_interval():
    a = make_schedule(T)
    assert a.shape == (T,)
    assert torch.all(a[1:] < a[:-1])
    assert 0 < float(a[-1]) < float(a[0]) < 1
    assert float(a[0]) > 0.999


@pytest.mark.parametrize("steps,depth", [(20, 0.7), (50, 0.5), (5, 1.0), (10, 0.05), (3, 0.01), (1, 1.0)])
def test_timestep_path_properties(steps, depth):
    path = timestep_path(T, steps, depth)
    k = max(1, round(depth * steps))
    assert len(path) == k + 1
    assert path[0] == 0
    assert all(b > a for a, b in zip(path, path[1:]))
    assert all(0 <= t <= T - 1 for t in path)
    # evenly spaced over the whole schedule (within rounding)
    gaps = np.diff(path)
    assert gaps.max() - gaps.min() <= 1
    assert abs(gaps.mean() - (T - 1) / steps) <= 1
    if depth == 1.0:
        assert path[-1] == T - 1


def test_timestep_path_depth_controls_how_far():
    shallow, deep = timestep_path(T, 20, 0.3), timestep_path(T, 20, 0.7)
    assert shallow == deep[: len(shallow)]
    assert deep[-1] > shallow[-1]
    assert abs(deep[-1] - 0.7 * (T - 1)) < (T - 1) / 20


# --- ddim_move -----------------------------------------------------------------------------------


def test_ddim_move_same_alpha_is_identity():
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 3, 8, 8, generator=gen), torch.randn(2, 3, 8, 8, generator=gen)
    for a in [0.999, 0.5, 0.01]:
        torch.testing.assert_close(ddim_move(x, eps, a, a), x, atol=1e-5, rtol=1e-5)


def test_ddim_move_from_clean_is_forward_noising_and_reversible():
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 3, 8, 8, generator=gen), torch.randn(2, 3, 8, 8, generator=gen)
    x_t = ddim_move(x0, eps, 1.0, 0.3)
    torch.testing.assert_close(x_t, 0.3**0.5 * x0 + 0.7**0.5 * eps)
    torch.testing.assert_close(ddim_move(x_t, eps, 0.3, 1.0), x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ddim_move(ddim_move(x_t, eps, 0.3, 0.8), eps, 0.8, 0.3), x_t, atol=1e-5, rtol=1e-5)


# --- inversion round trip -------------------------------------------------------------------------


def test_round_trip_error_shrinks_with_steps(diffusion, images):
    x0, y = images
    errors = {}
    for steps in (5, 50):
        path = timestep_path(T, steps, 0.5)
        x_t = invert(diffusion, x0, y, path)
        errors[steps] = _rmse(reconstruct(diffusion, x_t, y, path), x0)
        # the inverted latent is genuinely noised, so the round trip is not trivially the identity
        assert _rmse(x_t, x0) > 0.1
    assert errors[50] < errors[5] / 3
    assert errors[50] < 0.02


def test_round_trip_survives_pixel_quantisation(diffusion, images):
    """uint8 -> model -> invert -> reconstruct -> uint8 comes back within a grey level or two."""
    pixels = model_to_pixels(images[0])
    x0 = pixels_to_model(pixels)
    path = timestep_path(T, 50, 0.3)
    back = model_to_pixels(reconstruct(diffusion, invert(diffusion, x0, images[1], path), images[1], path))
    assert np.abs(back.astype(int) - pixels.astype(int)).max() <= 3


def test_invert_depends_on_label(diffusion, images):
    x0, y = images
    path = timestep_path(T, 10, 0.5)
    assert _rmse(invert(diffusion, x0, y, path), invert(diffusion, x0, (y + 1) % 3, path)) > 1e-4


# --- guides ---------------------------------------------------------------------------------------


def test_cfg_scale_zero_regenerates_with_null_label(diffusion, images):
    x0, y = images
    path = timestep_path(T, 8, 0.5)
    x_t = invert(diffusion, x0, y, path)
    guide = ClassifierFreeGuide(diffusion)
    null = torch.full_like(y, diffusion.null_label)
    with torch.no_grad():
        at_zero = regenerate(diffusion, guide, x_t, y, path, 0.0)
        with_null = regenerate(diffusion, guide, x_t, null, path, 1.0)
        # and by hand, with the marginal score only
        x = x_t
        for t_from, t_to in zip(path[::-1], [*path[-2::-1], -1]):
            x = ddim_move(x, diffusion.eps(x, t_from, null), diffusion.alpha(t_from), diffusion.alpha(t_to))
    torch.testing.assert_close(at_zero, with_null, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(at_zero, x, atol=1e-5, rtol=1e-5)
    # the guidance scale matters: a conditional regeneration is a different image
    assert _rmse(regenerate(diffusion, guide, x_t, y, path, 3.0), at_zero) > 1e-4


def test_cfg_guided_eps_is_linear_in_scale(diffusion, images):
    x0, y = images
    guide = ClassifierFreeGuide(diffusion)
    x_t = ddim_move(x0, torch.randn_like(x0), 1.0, diffusion.alpha(300))
    e0, e1, e3 = (guide.guided_eps(x_t, 300, y, s) for s in (0.0, 1.0, 3.0))
    torch.testing.assert_close(e1, diffusion.eps(x_t, 300, y), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e3 - e0, 3 * (e1 - e0), atol=1e-5, rtol=1e-4)


def test_classifier_guide_scale_zero_is_unconditional_and_scale_moves_eps(diffusion, images):
    torch.manual_seed(0)
    guide = NoisyClassifierGuide(diffusion, NoisyClassifier(3, width=8).eval())
    x0, _ = images
    y_cf = torch.tensor([2, 0, 1])
    t = 400
    x_t = ddim_move(x0, torch.randn_like(x0), 1.0, diffusion.alpha(t))
    with torch.no_grad():  # regenerate may run under no_grad; the guide must still get its gradient
        uncond = diffusion.eps(x_t, t, torch.full_like(y_cf, diffusion.null_label))
        e0 = guide.guided_eps(x_t, t, y_cf, 0.0)
        e1 = guide.guided_eps(x_t, t, y_cf, 1.0)
        e2 = guide.guided_eps(x_t, t, y_cf, 2.0)
    torch.testing.assert_close(e0, uncond)
    assert (e1 - e0).abs().max() > 1e-6
    torch.testing.assert_close(e2 - e0, 2 * (e1 - e0), atol=1e-6, rtol=1e-4)
    # the shift is -s sqrt(1 - abar) grad log p(y_cf | x_t): a small step along -shift raises log p(y_cf)
    clf = guide.classifier
    ts = torch.full((3,), t, dtype=torch.long)

    def log_p(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.log_softmax(clf(x, ts), 1).gather(1, y_cf[:, None]).squeeze(1)

    step = -(e1 - e0)
    step = step / step.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * 1e-2
    assert torch.all(log_p(x_t + step) > log_p(x_t))
    assert x_t.grad is None


# --- shards ---------------------------------------------------------------------------------------


def _split(n: int) -> pd.DataFrame:
    return pd.DataFrame({"split": "train", "index": np.arange(100, 100 + n), "label": np.arange(n) % 3})


@pytest.mark.parametrize("n,k", [(10, 3), (7, 1), (5, 5), (4, 6)])
def test_shard_rows_cover_every_row_once(n, k):
    split = _split(n)
    parts = [shards.shard_rows(split, s, k) for s in range(k)]
    rows = np.concatenate([p["row"].to_numpy() for p in parts])
    assert sorted(rows.tolist()) == list(range(n))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    for p in parts:  # each shard row still carries its own split row
        np.testing.assert_array_equal(p["index"].to_numpy(), split["index"].to_numpy()[p["row"].to_numpy()])


def test_shard_rows_rejects_bad_shard():
    with pytest.raises(ValueError):
        shards.shard_rows(_split(4), 2, 2)
    with pytest.raises(ValueError):
        shards.shard_rows(_split(4), -1, 2)


def _outputs(split: pd.DataFrame, k: int) -> list[tuple[dict[str, np.ndarray], pd.DataFrame]]:
    parts = []
    for s in range(k):
        rows = shards.shard_rows(split, s, k)
        # each "image" encodes its split row, so the merge order is checkable
        imgs = np.stack([np.full((2, 2, 3), r, np.uint8) for r in rows["row"]])
        parts.append(({"images": imgs}, rows.assign(y_cf=rows["row"] * 10)))
    return parts


def test_merge_restores_row_order():
    split = _split(11)
    parts = _outputs(split, 3)
    arrays, table = shards.merge(parts[::-1], len(split))  # shard order must not matter
    assert table["row"].tolist() == list(range(11))
    assert table["index"].tolist() == split["index"].tolist()
    assert (table["y_cf"] == table["row"] * 10).all()
    assert arrays["images"][:, 0, 0, 0].tolist() == list(range(11))


def test_merge_rejects_missing_or_duplicated_shard():
    split = _split(11)
    parts = _outputs(split, 3)
    with pytest.raises(ValueError):
        shards.merge(parts[:2], len(split))
    with pytest.raises(ValueError):
        shards.merge([parts[0], parts[1], parts[1]], len(split))
    with pytest.raises(ValueError):
        shards.merge(parts, len(split) + 1)


def test_noise_aware_classifier_trains_saves_and_loads_as_guide(tmp_path, diffusion):
    from dicap.backbones.guides import load_noisy_classifier, make_guide, train_noisy_classifier

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(24, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(24) % 3
    params = {"steps": 5, "batch_size": 8, "lr": 1e-3, "width": 8, "num_train_timesteps": 1000}
    losses = train_noisy_classifier(images, labels, 3, params, tmp_path, seed=0)
    assert len(losses) == 5 and all(np.isfinite(losses))
    loaded = load_noisy_classifier(tmp_path)
    x = pixels_to_model(images[:4])
    t = torch.full((4,), 10, dtype=torch.long)
    again = train_noisy_classifier(images, labels, 3, params, tmp_path / "again", seed=0)
    assert again == losses  # deterministic given the seed on CPU
    guide = make_guide("classifier", diffusion, tmp_path)
    assert torch.allclose(guide.classifier(x, t), loaded(x, t))
    assert guide.class_probs(x).shape == (4, 3)
    with pytest.raises(ValueError, match="classifier"):
        make_guide("classifier", diffusion, None)
    with pytest.raises(ValueError, match="unknown guide"):
        make_guide("clip-on-noise", diffusion)


# --- guide shortcuts and the unguided reference --------------------------------------------------


def test_cfg_shortcuts_at_scale_zero_and_one_equal_the_full_formula(diffusion, images):
    x, y = images
    guide = ClassifierFreeGuide(diffusion)
    null = torch.full_like(y, diffusion.null_label)
    eps_marginal, eps_cond = diffusion.eps(x, 300, null), diffusion.eps(x, 300, y)
    assert torch.allclose(guide.guided_eps(x, 300, y, 0.0), eps_marginal, atol=1e-6)
    assert torch.allclose(guide.guided_eps(x, 300, y, 1.0), eps_cond, atol=1e-6)
    full = eps_marginal + 2.5 * (eps_cond - eps_marginal)
    assert torch.allclose(guide.guided_eps(x, 300, y, 2.5), full, atol=1e-5)


def test_unguided_regeneration_ignores_the_target_class(diffusion, images):
    from dicap.counterfactual.ddim import regenerate_unguided

    x, y = images
    path = timestep_path(T, 10, 0.6)
    x_t = invert(diffusion, x, y, path)
    unguided = regenerate_unguided(diffusion, x_t, path)
    by_hand = regenerate(diffusion, ClassifierFreeGuide(diffusion), x_t, (y + 1) % 3, path, 0.0)
    assert torch.allclose(unguided, by_hand, atol=1e-6)
    assert not torch.allclose(unguided, regenerate(diffusion, ClassifierFreeGuide(diffusion), x_t, (y + 1) % 3, path, 3.0))
