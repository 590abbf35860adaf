"""DDIM inversion and regeneration (counterfactual/ddim.py) on a tiny random UNet: the timestep
path, one move, the round trip, guided and unguided regeneration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicap.backbones.diffusion import model_to_pixels, pixels_to_model
from dicap.backbones.guides import ClassifierFreeGuide
from dicap.counterfactual.ddim import ddim_move, invert, reconstruct, regenerate, timestep_path

pytestmark = pytest.mark.usefixtures("single_thread")

T = 1000


def _rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


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


# --- guided regeneration --------------------------------------------------------------------------


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


def test_unguided_regeneration_ignores_the_target_class(diffusion, images):
    from dicap.counterfactual.ddim import regenerate_unguided

    x, y = images
    path = timestep_path(T, 10, 0.6)
    x_t = invert(diffusion, x, y, path)
    unguided = regenerate_unguided(diffusion, x_t, path)
    by_hand = regenerate(diffusion, ClassifierFreeGuide(diffusion), x_t, (y + 1) % 3, path, 0.0)
    assert torch.allclose(unguided, by_hand, atol=1e-6)
    assert not torch.allclose(unguided, regenerate(diffusion, ClassifierFreeGuide(diffusion), x_t, (y + 1) % 3, path, 3.0))
