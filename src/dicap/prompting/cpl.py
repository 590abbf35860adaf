"""CPL (He et al., EMNLP 2022): counterfactual prompt learning in feature space.

CPL is CoCoOp plus a counterfactual made without any generator: the image feature ``v`` is
moved towards the feature ``v-`` of an image of the most similar other class,
``v* = (1 - u_y) * v + u_y * v-``, through a per-class mask ``u_y`` over feature dimensions.
As in CPL's code (eric-ai-lab/CPL, ``trainers/cocoopcf.py``, ``utils/solver.py``):

- the negative class of class ``y`` is the most similar other class by a similarity of
  class names.  CPL uses BERTScore, which needs a BERT download; here it is the cosine of
  the frozen CLIP text encoder's features of the hand-written prompts, which is offline;
- the negative image of a class is one fixed few-shot image of its negative class (CPL's
  ``cname2img``): here the first one in the few-shot set;
- a greedy solver gives ``u*``: starting from the class's first image, it swaps in the
  negative image's feature dimension that most raises the negative class's zero-shot logit,
  one at a time, until the negative class wins; the swapped dimensions are 1, the rest -1;
- the mask used is ``clamp(0.999 u* + 0.001 u, 0, 1)`` with ``u`` learned (initialised to 1),
  CPL's ``mupdate``;
- the loss adds ``cpl_weight x`` CPL's contrastive term (for every class prompt, the factual
  feature against the counterfactual one, softmax over the pair, no temperature) and
  ``mask_weight x ||u_y||`` (CPL's ``control_scale`` 0.07).  CPL sums these over the batch;
  here they are batch means, like the cross-entropy.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from dicap.prompting.cocoop import CoCoOp

MOMENTUM = 0.999  # CPL's mupdate: the solver's mask dominates the learned one


class CPL(CoCoOp, learner="cpl"):
    def __init__(self, clip_model: nn.Module, tokenizer, class_names: list[str], n_ctx: int, ctx_init: str | None,
                 cpl_weight: float = 1.0, mask_weight: float = 0.07, template: str = "a photo of a {}.", **recipe: Any):
        super().__init__(clip_model, tokenizer, class_names, n_ctx, ctx_init)
        self.cpl_weight, self.mask_weight = cpl_weight, mask_weight
        with torch.no_grad():
            tokens = tokenizer([template.format(n) for n in class_names]).to(clip_model.token_embedding.weight.device)
            hand = F.normalize(clip_model.encode_text(tokens).float(), dim=-1)
        similarity = hand @ hand.T
        similarity.fill_diagonal_(-float("inf"))
        self.register_buffer("hand_written", hand, persistent=False)
        self.register_buffer("negative_class", similarity.argmax(1), persistent=False)
        dim, n_classes = hand.shape[1], len(class_names)
        self.u = nn.Parameter(torch.ones(dim, n_classes))
        self.register_buffer("u_star", -torch.ones(dim, n_classes), persistent=False)
        self.register_buffer("negative_features", torch.zeros(n_classes, dim), persistent=False)

    def prepare(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Pick each class's negative image and solve its mask ``u*`` from the few-shot features."""
        labels = labels.long()
        first = {}
        for i, y in enumerate(labels.tolist()):
            first.setdefault(y, i)
        with torch.no_grad():
            for c, neg in enumerate(self.negative_class.tolist()):
                if c not in first or neg not in first:
                    continue  # a class without shots never enters the loss
                self.negative_features[c] = inputs[first[neg]]
                dims = greedy_edit(inputs[first[c]], inputs[first[neg]], self.hand_written[c], self.hand_written[neg])
                self.u_star[:, c] = -1.0
                self.u_star[dims, c] = 1.0

    def load_trainable_state(self, arrays, source) -> None:
        """As for any learner, except the mask ``u``: it covers the classes CPL trained on (the base
        classes), while a learner built for scoring has every class.  Scoring never uses it."""
        if "u" in arrays:
            self.u = nn.Parameter(torch.empty(tuple(arrays["u"].shape), dtype=self.u.dtype, device=self.u.device))
        super().load_trainable_state(arrays, source)

    def mask(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, D) masks of the batch's classes: CPL's ``mupdate``."""
        return torch.clamp(MOMENTUM * self.u_star[:, labels] + (1 - MOMENTUM) * self.u[:, labels], 0, 1).T

    def counterfactual(self, image_f: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``v* = (1 - u_y) v + u_y v-``, L2-normalised."""
        u = self.mask(labels)
        return F.normalize((1 - u) * image_f + u * self.negative_features[labels], dim=-1)

    def own_losses(self, image_f: torch.Tensor, text_f: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        labels = labels.long()
        cf = self.counterfactual(image_f, labels)
        pos = torch.einsum("bd,bcd->bc", image_f, text_f)
        neg = torch.einsum("bd,bcd->bc", cf, text_f)
        contrast = -F.log_softmax(torch.stack([pos, neg], dim=-1), dim=-1)[..., 0].mean()
        norm = self.mask(labels).norm(dim=1).mean()
        return {"cpl": self.cpl_weight * contrast, "cpl_mask": self.mask_weight * norm}


def greedy_edit(source: torch.Tensor, target: torch.Tensor, text_source: torch.Tensor, text_target: torch.Tensor) -> list[int]:
    """CPL's solver: dimensions of ``source`` replaced by ``target``'s, greedily, until the target class wins.

    Each step tries every remaining dimension at once (a (D, D) batch) and keeps the one giving
    the target class's prompt the highest similarity; it stops as soon as the edited feature is
    closer to the target prompt than to the source prompt, or when every dimension is swapped.
    """
    current = source.clone()
    chosen: list[int] = []
    free = torch.ones(len(source), dtype=torch.bool, device=source.device)
    for _ in range(len(source)):
        candidates = current.expand(len(source), -1).clone()
        candidates.diagonal().copy_(target)
        scores = F.normalize(candidates, dim=-1) @ text_target
        scores[~free] = -float("inf")
        best = int(scores.argmax())
        chosen.append(best)
        free[best] = False
        current[best] = target[best]
        edited = F.normalize(current, dim=-1)
        if edited @ text_target > edited @ text_source:
            break
    return chosen
