"""Losses of the estimation step."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(image_f: torch.Tensor, text_f: torch.Tensor, labels: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """CoOp's cross-entropy of image features against every class's text feature."""
    return F.cross_entropy(logit_scale * image_f @ text_f.T, labels)


def counterfactual_contrastive_loss(
    factual_f: torch.Tensor,
    counterfactual_f: torch.Tensor,
    text_f: torch.Tensor,
    source: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """DiCap's term: the source class's prompt must prefer the factual image to its counterfactual.

    The counterfactual shares every non-causal factor with the factual image and differs only
    in class, so this hard negative can only be told apart through causal (object) features.
    Per pair: ``-log exp(<t_y, f> / tau) / (exp(<t_y, f> / tau) + exp(<t_y, f_cf> / tau))``.
    """
    t = text_f[source]
    pos = (t * factual_f).sum(-1) / temperature
    neg = (t * counterfactual_f).sum(-1) / temperature
    return F.cross_entropy(torch.stack([pos, neg], dim=1), torch.zeros(len(t), dtype=torch.long, device=t.device))
