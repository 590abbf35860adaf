"""Losses of the estimation step, on similarities any learner produces (see learner.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(similarities: torch.Tensor, labels: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """CoOp's cross-entropy over every class's prompt: ``similarities`` is (B, C) cosine."""
    return F.cross_entropy(logit_scale * similarities, labels)


def counterfactual_contrastive_loss(factual: torch.Tensor, counterfactual: torch.Tensor, temperature: float) -> torch.Tensor:
    """DiCap's term: the source class's prompt must prefer the factual image to its counterfactual.

    ``factual`` and ``counterfactual`` are the source class's cosine similarity to each image
    of the pair, (B,).  The counterfactual shares every non-causal factor with the factual
    image and differs only in class, so this hard negative can only be told apart through
    causal (object) features.  Per pair:
    ``-log exp(<t_y, f> / tau) / (exp(<t_y, f> / tau) + exp(<t_y, f_cf> / tau))``, averaged.
    Its gradient on the prompt's feature ``t_y`` is ``-(1 - p) / tau (f - f_cf)``: the shared
    background cancels, so this term can neither learn nor unlearn a background (docs/method.md;
    tests/unit/prompting/test_losses.py holds it to that).

    No pairs (a batch none of whose images has a counterfactual, the caller having kept only
    those that do) give exactly 0, still on the graph, instead of the NaN of an empty mean.
    """
    if len(factual) == 0:
        return factual.sum()  # an empty sum: 0
    logits = torch.stack([factual, counterfactual], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
