"""Deterministic DDIM inversion and guided regeneration, batched over images.

Both directions use one move, ``x_a -> x_b`` along the DDIM ODE for a given noise
estimate, so inversion and regeneration are mirror images of each other and the round trip
error shrinks as the number of steps grows.
"""

from __future__ import annotations

import math

import torch

from dicap.backbones.diffusion import DiffusionBundle
from dicap.backbones.guides import ClassifierFreeGuide, Guide


def timestep_path(num_train_timesteps: int, steps: int, depth: float) -> list[int]:
    """Timesteps visited: ``steps`` span the whole schedule; ``depth`` in (0, 1] is how far to invert."""
    k = max(1, round(depth * steps))
    return [round(j * (num_train_timesteps - 1) / steps) for j in range(k + 1)]


def ddim_move(x: torch.Tensor, eps: torch.Tensor, alpha_from: float, alpha_to: float) -> torch.Tensor:
    """One deterministic DDIM step (``eta = 0``) between two noise levels."""
    x0 = (x - math.sqrt(1 - alpha_from) * eps) / math.sqrt(alpha_from)
    return math.sqrt(alpha_to) * x0 + math.sqrt(1 - alpha_to) * eps


@torch.no_grad()
def invert(diffusion: DiffusionBundle, x0: torch.Tensor, labels: torch.Tensor, path: list[int]) -> torch.Tensor:
    """Abduction: walk clean images up the path with the conditional score of their class."""
    x = ddim_move(x0, diffusion.eps(x0, path[0], labels), 1.0, diffusion.alpha(path[0]))
    for t_from, t_to in zip(path[:-1], path[1:]):
        eps = diffusion.eps(x, t_from, labels)
        x = ddim_move(x, eps, diffusion.alpha(t_from), diffusion.alpha(t_to))
    return x


def regenerate(
    diffusion: DiffusionBundle, guide: Guide, x_t: torch.Tensor, y_cf: torch.Tensor, path: list[int], guidance_scale: float
) -> torch.Tensor:
    """Action: walk back down the path with the guided noise estimate towards ``y_cf``."""
    x = x_t
    for t_from, t_to in zip(path[:0:-1], path[-2::-1]):
        eps = guide.guided_eps(x, t_from, y_cf, guidance_scale)
        x = ddim_move(x, eps, diffusion.alpha(t_from), diffusion.alpha(t_to))
    # The last point sits at the first timestep; one more move lands on the clean image.
    eps = guide.guided_eps(x, path[0], y_cf, guidance_scale)
    return ddim_move(x, eps, diffusion.alpha(path[0]), 1.0)


@torch.no_grad()
def reconstruct(diffusion: DiffusionBundle, x_t: torch.Tensor, labels: torch.Tensor, path: list[int]) -> torch.Tensor:
    """The round trip from inverted ``x_t``: regenerate with the source class's own conditional
    score, i.e. classifier-free guidance at s = 1 towards ``y`` itself (no class change)."""
    return regenerate(diffusion, ClassifierFreeGuide(diffusion), x_t, labels, path, 1.0)


@torch.no_grad()
def regenerate_unguided(diffusion: DiffusionBundle, x_t: torch.Tensor, path: list[int]) -> torch.Tensor:
    """The audit's reference: regenerate from inverted ``x_t`` with the marginal score (s = 0).

    It shows what the inversion alone does to an image, so a counterfactual's distance to
    the truth can be read against "no action at all".
    """
    null = torch.full((len(x_t),), diffusion.null_label, device=x_t.device, dtype=torch.long)
    return regenerate(diffusion, ClassifierFreeGuide(diffusion), x_t, null, path, 0.0)
