"""CoOp prompt learner on an open_clip text tower.

The prompt for class ``c`` is ``[SOS][ctx_1..ctx_M][tokens of c][.][EOT]``; the context
vectors are shared across classes and are the only trainable parameters.  The text tower
is re-run here step by step (token embedding, positional embedding, batch-first
transformer, final norm, EOT pooling, projection) because open_clip's ``encode_text``
cannot take embeddings in place of token ids.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class PromptLearner(nn.Module):
    def __init__(self, clip_model: nn.Module, tokenizer, class_names: list[str], n_ctx: int, ctx_init: str | None):
        super().__init__()
        self.clip = clip_model
        placeholder = " ".join(["X"] * n_ctx)
        self.register_buffer("tokens", tokenizer([f"{placeholder} {name}." for name in class_names]), persistent=False)
        with torch.no_grad():
            embedded = clip_model.token_embedding(self.tokens)
        # Everything but the context positions is fixed: SOS before, class name and EOT after.
        self.register_buffer("prefix", embedded[:, :1].clone(), persistent=False)
        self.register_buffer("suffix", embedded[:, 1 + n_ctx :].clone(), persistent=False)
        self.ctx = nn.Parameter(self.initial_context(clip_model, tokenizer, n_ctx, ctx_init))

    @staticmethod
    def initial_context(clip_model: nn.Module, tokenizer, n_ctx: int, ctx_init: str | None) -> torch.Tensor:
        """Token embeddings of ``ctx_init`` (e.g. "a photo of a"), else N(0, 0.02^2) as in CoOp."""
        width = clip_model.token_embedding.weight.shape[1]
        if ctx_init:
            ids = tokenizer([ctx_init])[0]
            n_words = int((ids != 0).sum()) - 2  # minus SOS and EOT
            if n_words != n_ctx:
                raise ValueError(f"ctx_init {ctx_init!r} has {n_words} tokens but n_ctx is {n_ctx}")
            with torch.no_grad():
                return clip_model.token_embedding(ids[1 : 1 + n_ctx]).clone()
        generator = torch.Generator().manual_seed(0)
        return torch.randn(n_ctx, width, generator=generator) * 0.02

    def forward(self) -> torch.Tensor:
        """L2-normalised text features (n_classes, D) for the current context."""
        n = len(self.tokens)
        x = torch.cat([self.prefix, self.ctx.unsqueeze(0).expand(n, -1, -1), self.suffix], dim=1)
        return encode_text_embeddings(self.clip, x, self.tokens)


def encode_text_embeddings(model: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's ``encode_text`` from token embeddings instead of token ids."""
    from open_clip.transformer import text_global_pool

    cast_dtype = model.transformer.get_cast_dtype()
    x = x.to(cast_dtype) + model.positional_embedding.to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if isinstance(model.text_projection, nn.Linear):
        x = model.text_projection(x)
    elif model.text_projection is not None:
        x = x @ model.text_projection
    return F.normalize(x, dim=-1)
