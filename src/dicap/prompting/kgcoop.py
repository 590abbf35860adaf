"""KgCoOp (Yao et al., CVPR 2023): CoOp kept near the hand-written prompts' knowledge.

The penalty is ``kg_weight x (1 - mean_c cos(t_c, t_c^hand))`` between each class's learned
text feature and that of the hand-written prompt, as KgCoOp's code computes it (the paper
writes the squared Euclidean distance, which for unit vectors is twice this).  With the
context initialised from the template's own words the two coincide, so the penalty starts
at zero and only grows as the context drifts.

Inside a subset of the texts (``PromptLearner.subset``: a text task's batch encodes only its
examples' candidate texts) the mean runs over the subset's texts only, i.e. the penalty of
the full formula computed on those rows.  Over batches it estimates the mean over all texts;
the estimate is unbiased when every text is equally likely to be in a batch's subset, and
otherwise leans to the texts that are candidates more often (those the cross-entropy trains
most, too).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from dicap.prompting.learner import PromptLearner

HAND_WRITTEN_CHUNK = 1024  # texts per forward pass when encoding the hand-written prompts once


class KgCoOp(PromptLearner, learner="kgcoop"):
    supports_subset = True  # own_losses indexes the hand-written features like the prompts

    def __init__(self, clip_model: nn.Module, tokenizer, class_names: list[str], n_ctx: int, ctx_init: str | None,
                 kg_weight: float = 8.0, template: str = "a photo of a {}.", **recipe: Any):
        super().__init__(clip_model, tokenizer, class_names, n_ctx, ctx_init)
        self.kg_weight = kg_weight
        with torch.no_grad():
            # in chunks: a paper VQA split has ~135k statements, too many for one forward pass
            texts = [template.format(name) for name in class_names]
            device = clip_model.token_embedding.weight.device
            hand = torch.cat([clip_model.encode_text(tokenizer(texts[i : i + HAND_WRITTEN_CHUNK]).to(device))
                              for i in range(0, len(texts), HAND_WRITTEN_CHUNK)])
        self.register_buffer("hand_written", F.normalize(hand.float(), dim=-1), persistent=False)

    def knowledge_penalty(self, text_f: torch.Tensor) -> torch.Tensor:
        """1 - the mean cosine between the learned and the hand-written class text features.

        ``text_f`` holds the active texts' features (all of them outside a subset), row for row."""
        hand = self.active_rows(self.hand_written)
        if len(hand) != len(text_f):
            raise ValueError(f"{len(text_f)} text features for {len(hand)} hand-written ones: "
                             "compute them inside the same subset as the penalty")
        return 1.0 - F.cosine_similarity(text_f, hand.to(text_f.dtype), dim=-1).mean()

    def own_losses(self, image_f: torch.Tensor, text_f: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"kg": self.kg_weight * self.knowledge_penalty(text_f)}
