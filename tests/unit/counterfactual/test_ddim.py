"""DDIM inversion and regeneration (counterfactual/ddim.py) on a tiny random UNet: the timestep
path, one move, the round trip with each guide's one score, guided and unguided regeneration,
and generation from noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicap.backbones.diffusion import model_to_pixels, pixels_to_model
from dicap.backbones.guides import ClassifierFreeGuide, ClipPosterior, ClipPosteriorGuide, NoisyClassifier, NoisyClassifierGuide
from dicap.counterfactual.ddim import ddim_move, invert, reconstruct, regenerate, sample, sampling_path, timestep_path

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


GUIDES = ("cfg", "classifier", "clip")


@pytest.fixture(scope="module")
def guides(diffusion, clip):
    """One guide of each kind on the tiny pixel UNet (random classifier, random CLIP text features)."""
    torch.manual_seed(0)
    text = torch.randn(3, clip.model.text_projection.shape[1])
    return {
        "cfg": ClassifierFreeGuide(diffusion),
        "classifier": NoisyClassifierGuide(diffusion, NoisyClassifier(3, width=8).eval().requires_grad_(False)),
        "clip": ClipPosteriorGuide(diffusion, ClipPosterior(clip, text, diffusion.decode)),
    }


@pytest.mark.parametrize("name", GUIDES)
@pytest.mark.parametrize("depth", [0.3, 0.6])
def test_round_trip_at_the_abduction_scale_reconstructs_for_every_guide(diffusion, guides, images, name, depth):
    """Abduction and action share one score: regenerating towards ``y`` at the guide's
    ``abduction_scale`` (cfg: s = 1; classifier, clip: s = 0) undoes the inversion."""
    x0, y = images
    guide = guides[name]
    path = timestep_path(T, 50, depth)
    x_t = invert(diffusion, guide, x0, y, path)
    assert _rmse(x_t, x0) > 0.1  # genuinely noised
    back = reconstruct(diffusion, guide, x_t, y, path)
    torch.testing.assert_close(back, regenerate(diffusion, guide, x_t, y, path, guide.abduction_scale))
    assert _rmse(back, x0) < 0.02
    # the other abduction (conditional for the marginal guides, marginal for cfg) does not come back as close
    other = guides["classifier" if name == "cfg" else "cfg"]
    mismatched = regenerate(diffusion, guide, invert(diffusion, other, x0, y, path), y, path, guide.abduction_scale)
    assert _rmse(mismatched, x0) > 2 * _rmse(back, x0)


def test_each_guide_abducts_with_the_score_its_action_starts_from(diffusion, guides, images):
    x0, y = images
    path = timestep_path(T, 6, 0.5)
    null = torch.full_like(y, diffusion.null_label)
    cfg = guides["cfg"]
    for name in ("classifier", "clip"):  # Diff-SCM: the marginal score, whatever the class
        assert guides[name].abduction_scale == 0.0
        marginal = invert(diffusion, guides[name], x0, y, path)
        torch.testing.assert_close(marginal, invert(diffusion, cfg, x0, null, path))
        torch.testing.assert_close(marginal, invert(diffusion, guides[name], x0, (y + 1) % 3, path))
    # cfg: the source class's conditional score, the action's at s = 1
    assert cfg.abduction_scale == 1.0
    torch.testing.assert_close(cfg.abduction_eps(x0, 200, y), cfg.guided_eps(x0, 200, y, 1.0))


def test_round_trip_error_shrinks_with_steps(diffusion, images):
    x0, y = images
    guide = ClassifierFreeGuide(diffusion)
    errors = {}
    for steps in (5, 50):
        path = timestep_path(T, steps, 0.5)
        x_t = invert(diffusion, guide, x0, y, path)
        errors[steps] = _rmse(reconstruct(diffusion, guide, x_t, y, path), x0)
        # the inverted latent is genuinely noised, so the round trip is not trivially the identity
        assert _rmse(x_t, x0) > 0.1
    assert errors[50] < errors[5] / 3
    assert errors[50] < 0.02


def test_round_trip_survives_pixel_quantisation(diffusion, images):
    """uint8 -> model -> invert -> reconstruct -> uint8 comes back within a grey level or two."""
    pixels = model_to_pixels(images[0])
    x0 = pixels_to_model(pixels)
    path = timestep_path(T, 50, 0.3)
    guide = ClassifierFreeGuide(diffusion)
    back = model_to_pixels(reconstruct(diffusion, guide, invert(diffusion, guide, x0, images[1], path), images[1], path))
    assert np.abs(back.astype(int) - pixels.astype(int)).max() <= 3


def test_cfg_inversion_depends_on_label(diffusion, images):
    x0, y = images
    path = timestep_path(T, 10, 0.5)
    guide = ClassifierFreeGuide(diffusion)
    assert _rmse(invert(diffusion, guide, x0, y, path), invert(diffusion, guide, x0, (y + 1) % 3, path)) > 1e-4


# --- guided regeneration --------------------------------------------------------------------------


def test_cfg_scale_zero_regenerates_with_null_label(diffusion, images):
    x0, y = images
    path = timestep_path(T, 8, 0.5)
    guide = ClassifierFreeGuide(diffusion)
    x_t = invert(diffusion, guide, x0, y, path)
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
    x_t = invert(diffusion, ClassifierFreeGuide(diffusion), x, y, path)
    unguided = regenerate_unguided(diffusion, x_t, path)
    by_hand = regenerate(diffusion, ClassifierFreeGuide(diffusion), x_t, (y + 1) % 3, path, 0.0)
    assert torch.allclose(unguided, by_hand, atol=1e-6)
    assert not torch.allclose(unguided, regenerate(diffusion, ClassifierFreeGuide(diffusion), x_t, (y + 1) % 3, path, 3.0))


# --- generation from noise ------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [2, 5, 20, 50])
def test_sampling_path_spans_the_schedule_but_its_last_point(steps):
    path = sampling_path(T, steps)
    assert len(path) == steps and path[0] == 0
    assert path[-1] == round((steps - 1) * (T - 1) / steps) < T - 1
    assert path == timestep_path(T, steps, 1.0)[:-1]


def test_sample_is_regeneration_from_noise(diffusion):
    guide = ClassifierFreeGuide(diffusion)
    noise = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2])
    with torch.no_grad():
        x = sample(diffusion, guide, noise, labels, 6, 2.0)
    torch.testing.assert_close(x, regenerate(diffusion, guide, noise, labels, sampling_path(T, 6), 2.0))
    assert torch.isfinite(x).all() and not torch.allclose(x, sample(diffusion, guide, noise, (labels + 1) % 3, 6, 2.0))
