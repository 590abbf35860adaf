"""The guides (backbones/guides.py): classifier-free guidance and its shortcuts, the noise-aware
classifier, and the CLIP posterior guide on the latent model; on tiny random UNets (CPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dicap.backbones.diffusion import DiffusionBundle, build_unet, make_schedule, pixels_to_model
from dicap.backbones.guides import (
    ClassifierFreeGuide,
    ClipPosterior,
    ClipPosteriorGuide,
    NoisyClassifier,
    NoisyClassifierGuide,
    make_guide,
)
from dicap.counterfactual import ddim
from dicap.counterfactual.ddim import ddim_move
from dicap.testing.tiny_models import T
from latent_stand_ins import CLASSES, TEMPLATE
from latent_stand_ins import pixels as _pixels
from latent_stand_ins import rmse as _rmse

pytestmark = pytest.mark.usefixtures("single_thread")


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


# --- the CLIP guide -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_guide(bundle, clip) -> ClipPosteriorGuide:
    guide = make_guide("clip", bundle, clip=clip, class_names=CLASSES, template=TEMPLATE)
    assert isinstance(guide, ClipPosteriorGuide)
    return guide


def test_clip_guide_steps_up_the_posterior_of_the_target(bundle, clip_guide):
    z0 = bundle.to_model(_pixels(3, seed=1))
    y_cf, t = torch.tensor([2, 0, 1]), 400
    a = bundle.alpha(t)
    z_t = ddim.ddim_move(z0, torch.randn(z0.shape, generator=torch.Generator().manual_seed(0)), 1.0, a)
    with torch.no_grad():  # regenerate may run under no_grad: the guide still gets its gradient
        uncond = bundle.eps(z_t, t, torch.full_like(y_cf, bundle.null_label))
        e0, e1, e2 = (clip_guide.guided_eps(z_t, t, y_cf, s) for s in (0.0, 1.0, 2.0))
    torch.testing.assert_close(e0, uncond)
    assert torch.isfinite(e1).all() and (e1 - e0).abs().max() > 1e-6
    torch.testing.assert_close(e2 - e0, 2 * (e1 - e0), atol=1e-6, rtol=1e-4)

    # guidance shifts x0_hat by +s (1 - a) / a * grad_x0 log p(y_cf | x0): a small step that way raises it
    def log_p(x0_hat: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return clip_guide.posterior.log_probs(x0_hat).gather(1, y_cf[:, None]).squeeze(1)

    x0_hat = (z_t - math.sqrt(1 - a) * e0) / math.sqrt(a)
    step = -(e1 - e0)
    step = step / step.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * 1e-2
    assert torch.all(log_p(x0_hat + step) > log_p(x0_hat))
    assert torch.all(log_p(x0_hat - step) < log_p(x0_hat))
    # class_probs: the same posterior on the clean latent, a distribution over the classes
    probs = clip_guide.class_probs(z0)
    assert probs.shape == (3, 3) and torch.allclose(probs.sum(1), torch.ones(3))
    torch.testing.assert_close(probs, clip_guide.posterior.log_probs(z0).exp().detach())


def test_clip_guide_micro_batches_and_unet_backprop(bundle, clip, clip_guide):
    z0 = bundle.to_model(_pixels(3, seed=2))
    y_cf, t = torch.tensor([1, 2, 0]), 600
    z_t = ddim.ddim_move(z0, torch.randn(z0.shape, generator=torch.Generator().manual_seed(1)), 1.0, bundle.alpha(t))
    whole = clip_guide.guided_eps(z_t, t, y_cf, 3.0)
    chunked = ClipPosteriorGuide(bundle, clip_guide.posterior, grad_batch_size=1).guided_eps(z_t, t, y_cf, 3.0)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-4)
    full = ClipPosteriorGuide(bundle, clip_guide.posterior, backprop_unet=True).guided_eps(z_t, t, y_cf, 3.0)
    assert torch.isfinite(full).all() and _rmse(full, whole) > 1e-7  # the UNet's Jacobian changes the gradient
    assert not any(p.grad is not None for p in bundle.unet.parameters())


def test_clip_guide_raises_the_targets_posterior_over_a_regeneration(bundle, clip_guide):
    """Whole DDIM regenerations: on average CLIP believes y_cf more with guidance than without."""
    z0, y = bundle.to_model(_pixels(6, seed=3)), torch.tensor([0, 1, 2, 0, 1, 2])
    y_cf = (y + 1) % 3
    path = ddim.timestep_path(T, 6, 0.5)
    z_t = ddim.invert(bundle, clip_guide, z0, y, path)
    p = {s: clip_guide.class_probs(ddim.regenerate(bundle, clip_guide, z_t, y_cf, path, s)).gather(1, y_cf[:, None]).mean()
         for s in (0.0, 5.0)}
    assert p[5.0] > p[0.0] + 0.02, p  # about +0.03 to +0.1 over CLIP and image seeds; a flipped sign lowers it


def test_make_guide_chooses_the_cfg_posterior(bundle, clip):
    with pytest.raises(ValueError, match="clip="):
        make_guide("cfg", bundle)  # a latent model's cfg guide reports CLIP's posterior: it needs CLIP
    assert make_guide("cfg", bundle, cfg_posterior="diffusion").posterior is None
    guide = make_guide("cfg", bundle, clip=clip, class_names=CLASSES, template=TEMPLATE)
    assert isinstance(guide.posterior, ClipPosterior)
    features = clip.encode_texts([TEMPLATE.format(c) for c in CLASSES])
    from_features = make_guide("cfg", bundle, clip=clip, text_features=features.numpy())
    z = bundle.to_model(_pixels(2))
    torch.testing.assert_close(from_features.class_probs(z), guide.class_probs(z))
    with pytest.raises(ValueError, match="clip="):
        make_guide("clip", bundle, clip=clip)
    with pytest.raises(ValueError, match="unknown cfg posterior"):
        make_guide("cfg", bundle, clip=clip, text_features=features, cfg_posterior="oracle")
    # the embedded suite's pixel model keeps its diffusion classifier; the CLIP guide works on pixels too
    unet = build_unet(8, 3, {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4})
    pixel = DiffusionBundle(unet.eval().requires_grad_(False), make_schedule(T), 3)
    assert make_guide("cfg", pixel).posterior is None
    on_pixels = make_guide("clip", pixel, clip=clip, text_features=features)
    x_t, y_cf = pixels_to_model(_pixels(2, size=8)), torch.tensor([1, 2])
    shift = on_pixels.guided_eps(x_t, 300, y_cf, 1.0) - on_pixels.guided_eps(x_t, 300, y_cf, 0.0)
    assert torch.isfinite(shift).all() and shift.abs().max() > 1e-6
