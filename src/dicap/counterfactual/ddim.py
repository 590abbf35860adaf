"""Deterministic DDIM inversion and guided regeneration, batched over images.

Both directions use one move, ``x_a -> x_b`` along the DDIM ODE for a given noise
estimate, and one score: inversion walks up with the guide's ``abduction_eps``, the score its
action starts from (backbones/guides.py), so regenerating at the guide's
``abduction_scale`` is the mirror image of inverting, and the round-trip error shrinks as
the number of steps grows, whichever the guide.
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
def invert(diffusion: DiffusionBundle, guide: Guide, x0: torch.Tensor, labels: torch.Tensor, path: list[int]) -> torch.Tensor:
    """Abduction: walk clean images of class ``labels`` up the path with the guide's
    abduction score (the marginal score for classifier guidance, the source class's
    conditional score for classifier-free guidance)."""
    x = ddim_move(x0, guide.abduction_eps(x0, path[0], labels), 1.0, diffusion.alpha(path[0]))
    for t_from, t_to in zip(path[:-1], path[1:]):
        eps = guide.abduction_eps(x, t_from, labels)
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
def reconstruct(diffusion: DiffusionBundle, guide: Guide, x_t: torch.Tensor, labels: torch.Tensor, path: list[int]) -> torch.Tensor:
    """The round trip from inverted ``x_t``: regenerate towards the source class ``labels`` at
    the guide's ``abduction_scale``, where the action is the abduction score (no change)."""
    return regenerate(diffusion, guide, x_t, labels, path, guide.abduction_scale)


def sampling_path(num_train_timesteps: int, steps: int) -> list[int]:
    """The timesteps a generation from noise visits: ``steps`` over the whole schedule, less
    the very last point, as diffusers' DDIM does ("leading" spacing).  At ``T - 1``
    ``alpha_bar`` is ~1e-9 and the first move would multiply the model's error ~1000x; one
    step below, pure noise is already a fine draw of ``x_t`` (``sqrt(alpha_bar) < 0.08``)."""
    return timestep_path(num_train_timesteps, steps, (steps - 1) / steps if steps > 1 else 1.0)


def sample(diffusion: DiffusionBundle, guide: Guide, noise: torch.Tensor, labels: torch.Tensor, steps: int,
           guidance_scale: float) -> torch.Tensor:
    """Generate images of ``labels`` from Gaussian ``noise``: the action with nothing abducted,
    which shows what the model knows of each class."""
    return regenerate(diffusion, guide, noise, labels, sampling_path(diffusion.num_train_timesteps, steps), guidance_scale)


@torch.no_grad()
def regenerate_unguided(diffusion: DiffusionBundle, x_t: torch.Tensor, path: list[int]) -> torch.Tensor:
    """The audit's reference: regenerate from inverted ``x_t`` with the marginal score (s = 0).

    ``x_t`` comes from the same abduction as the counterfactual.  With classifier (or CLIP)
    guidance s = 0 is the abduction score itself, so this is the round trip; with
    classifier-free guidance it drops the class the noise was abducted under.  Either way it
    shows what the generator does without guidance towards ``y_cf``, so a counterfactual's
    distance to the truth can be read against it.
    """
    null = torch.full((len(x_t),), diffusion.null_label, device=x_t.device, dtype=torch.long)
    return regenerate(diffusion, ClassifierFreeGuide(diffusion), x_t, null, path, 0.0)
