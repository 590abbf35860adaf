"""CoCoOp (Zhou et al., CVPR 2022): a context conditioned on each image.

A small meta-network maps the image feature to a bias added to every context token, so each
image gets its own prompt for every class.  The image encoder is still frozen and the
meta-network reads its *feature*, so the cached features serve here as they do for CoOp;
what cannot be cached is the text side: every image needs ``C`` prompts encoded.  They are
encoded in one batched call of ``B x C`` sequences, not CoCoOp's loop over images.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn

from dicap.prompting.learner import PromptLearner, encode_text_embeddings


class CoCoOp(PromptLearner, learner="cocoop"):
    def __init__(self, clip_model: nn.Module, tokenizer, class_names: list[str], n_ctx: int, ctx_init: str | None,
                 **recipe: Any):
        super().__init__(clip_model, tokenizer, class_names, n_ctx, ctx_init)
        vis_dim = int(clip_model.text_projection.shape[1] if isinstance(clip_model.text_projection, torch.Tensor)
                      else clip_model.text_projection.out_features)  # image and text features share this width
        width = self.ctx.shape[1]
        # CoCoOp's Linear(D, D/16) - ReLU - Linear(D/16, width), at least one hidden unit for tiny models;
        # initialised from its own seed so a learner is the same whatever ran before it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.meta_net = nn.Sequential(OrderedDict([
                ("linear1", nn.Linear(vis_dim, max(1, vis_dim // 16))),
                ("relu", nn.ReLU(inplace=True)),
                ("linear2", nn.Linear(max(1, vis_dim // 16), width)),
            ]))

    def class_features(self, image_f: torch.Tensor) -> torch.Tensor:
        """(B, C, D): every class's prompt with the context shifted by each image's meta-net bias."""
        b, c = len(image_f), len(self.tokens)
        ctx = self.ctx.unsqueeze(0) + self.meta_net(image_f.to(self.ctx.dtype)).unsqueeze(1)  # (B, M, W)
        prefix, suffix = self.fixed_parts()
        x = torch.cat([
            prefix.unsqueeze(0).expand(b, -1, -1, -1),
            ctx.unsqueeze(1).expand(-1, c, -1, -1),
            suffix.unsqueeze(0).expand(b, -1, -1, -1),
        ], dim=2)
        text = encode_text_embeddings(self.clip, x.flatten(0, 1), self.tokens.repeat(b, 1))
        return text.view(b, c, -1)
