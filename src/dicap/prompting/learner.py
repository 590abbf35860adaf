"""CoOp, the prompt learner every other learner extends, on an open_clip text tower.

The prompt for class ``c`` is ``[SOS][ctx_1..ctx_M][tokens of c][.][EOT]``; the context
vectors are shared across classes and are CoOp's only trainable parameters.  The text tower
is re-run here step by step (token embedding, positional embedding, batch-first
transformer, final norm, EOT pooling, projection) because open_clip's ``encode_text``
cannot take embeddings in place of token ids.

Every learner answers the same four questions, so the trainer, the DiCap term and
evaluation are written once for all of them:

- :meth:`PromptLearner.image_features`: the L2-normalised image features of a batch of
  inputs.  The inputs are cached frozen features (the identity here) unless the learner
  sets ``uses_pixels``, in which case they are uint8 images the learner encodes itself;
- :meth:`PromptLearner.class_features`: the class text features, ``(C, D)``, or
  ``(B, C, D)`` when ``conditional`` (they depend on each image);
- :meth:`PromptLearner.own_losses`: the learner's own terms beside cross-entropy
  (KgCoOp's penalty, CPL's counterfactual loss), already weighted;
- :meth:`PromptLearner.trainable_state`: the tensors a prompt file stores.

A text task's learner has one prompt per candidate text, up to ~100k of them, while a batch
needs only its own examples' candidates.  Inside ``with learner.subset(rows):`` the learner
encodes only those rows of its prompts (see :meth:`PromptLearner.subset`), so a step costs
the batch's texts, not all of them.  A learner that builds its prompts its own way
(CoCoOp, CPL, MaPLe) does not take a subset and says so through ``supports_subset``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dicap.prompting.registry import LEARNERS, LearnerSpec, learner_spec


class PromptLearner(nn.Module):
    # The learner's entry in prompting/registry.py, bound by ``class X(PromptLearner, learner="x")``;
    # name, uses_pixels (inputs are images, the learner runs the vision tower) and conditional
    # (class text features differ per image) are read from it.
    spec: ClassVar[LearnerSpec] = LEARNERS["coop"]
    name: ClassVar[str] = spec.name
    uses_pixels: ClassVar[bool] = spec.uses_pixels
    conditional: ClassVar[bool] = spec.conditional
    # True: forward()/class_features()/own_losses() honour ``active`` (a subset of the texts).
    # A subclass overriding one of SUBSET_AWARE gets False unless it sets this itself, so a
    # learner written without subsets in mind refuses one instead of encoding every text.
    supports_subset: ClassVar[bool] = True
    SUBSET_AWARE: ClassVar[tuple[str, ...]] = ("forward", "class_features", "prompts", "own_losses")

    def __init_subclass__(cls, learner: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if learner is not None:
            cls.spec = learner_spec(learner)
            cls.name, cls.uses_pixels, cls.conditional = cls.spec.name, cls.spec.uses_pixels, cls.spec.conditional
        if "supports_subset" not in cls.__dict__ and any(name in cls.__dict__ for name in cls.SUBSET_AWARE):
            cls.supports_subset = False

    def __init__(self, clip_model: nn.Module, tokenizer, class_names: list[str], n_ctx: int, ctx_init: str | None,
                 **recipe: Any):
        super().__init__()
        clip_model.requires_grad_(False)  # frozen: only the learner's own parameters train
        self.clip = clip_model
        self.n_ctx = n_ctx
        placeholder = " ".join(["X"] * n_ctx)
        # on the frozen model's device: evaluation builds learners around a model already on the GPU
        device = clip_model.token_embedding.weight.device
        self.register_buffer("tokens", tokenizer([f"{placeholder} {name}." for name in class_names]).to(device), persistent=False)
        self.ctx = nn.Parameter(self.initial_context(clip_model, tokenizer, n_ctx, ctx_init))
        self._active: torch.Tensor | None = None  # see subset(); not state: never saved or moved

    @staticmethod
    def initial_context(clip_model: nn.Module, tokenizer, n_ctx: int, ctx_init: str | None) -> torch.Tensor:
        """Token embeddings of ``ctx_init`` (e.g. "a photo of a"), else N(0, 0.02^2) as in CoOp."""
        width = clip_model.token_embedding.weight.shape[1]
        if ctx_init:
            ids = tokenizer([ctx_init])[0].to(clip_model.token_embedding.weight.device)
            n_words = int((ids != 0).sum()) - 2  # minus SOS and EOT
            if n_words != n_ctx:
                raise ValueError(f"ctx_init {ctx_init!r} has {n_words} tokens but n_ctx is {n_ctx}")
            with torch.no_grad():
                return clip_model.token_embedding(ids[1 : 1 + n_ctx]).clone()
        generator = torch.Generator().manual_seed(0)
        return (torch.randn(n_ctx, width, generator=generator) * 0.02).to(clip_model.token_embedding.weight.device)

    # --- a subset of the texts ------------------------------------------------------------------------

    @property
    def active(self) -> torch.Tensor | None:
        """The rows (text indices, in order) that forward() encodes, or None for every text."""
        return self._active

    @active.setter
    def active(self, rows: torch.Tensor | None) -> None:
        if rows is not None:
            if not self.supports_subset:
                raise TypeError(f"{type(self).__name__} cannot encode a subset of its texts "
                                f"(supports_subset is False): it always encodes all {len(self.tokens)}")
            if rows.dim() != 1 or rows.dtype == torch.bool or rows.is_floating_point() or rows.is_complex():
                raise ValueError(f"a subset is a 1-D tensor of text indices, got {rows.dtype} of shape {tuple(rows.shape)}")
            rows = rows.to(device=self.tokens.device, dtype=torch.long)
        self._active = rows

    @contextmanager
    def subset(self, rows: torch.Tensor | None) -> Iterator[PromptLearner]:
        """Encode only ``rows`` of the texts (in that order) inside the block; None: all of them.

        forward(), class_features() and own_losses() then see ``len(rows)`` texts, row ``i``
        being text ``rows[i]``.  The previous subset comes back on exit, exception or not, so a
        failed step cannot leave the learner encoding a stale subset at evaluation.
        """
        previous = self._active
        self.active = rows
        try:
            yield self
        finally:
            self._active = previous

    def active_rows(self, per_text: torch.Tensor) -> torch.Tensor:
        """``per_text`` (one row per text) restricted to the active subset: a learner's buffers indexed alike."""
        return per_text if self._active is None else per_text[self._active]

    def fixed_parts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen parts of every (active) text's prompt: SOS's embedding, (C, 1, W), and the
        class name's and EOT's, (C, L - 1 - n_ctx, W).

        Looked up once per call rather than kept, so a learner over a paper VQA split's ~135k
        statements holds their token ids (80 MB), not their embeddings (20 GB); a subset looks
        up only its own texts."""
        with torch.no_grad():
            fixed = self.clip.token_embedding(self.active_rows(self.tokens))
        return fixed[:, :1], fixed[:, 1 + self.n_ctx :]

    def prompts(self, ctx: torch.Tensor) -> torch.Tensor:
        """Token embeddings of every (active) class's prompt around ``ctx``: (n_ctx, W) -> (C, L, W)."""
        prefix, suffix = self.fixed_parts()
        return torch.cat([prefix, ctx.unsqueeze(0).expand(len(prefix), -1, -1), suffix], dim=1)

    def forward(self) -> torch.Tensor:
        """L2-normalised text features (n_classes, D) for the current context; (len(active), D) in a subset."""
        return encode_text_embeddings(self.clip, self.prompts(self.ctx), self.active_rows(self.tokens))

    # --- the interface the trainer and evaluation use ---------------------------------------------

    def image_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features of a batch: cached features pass through."""
        return inputs

    def class_features(self, image_f: torch.Tensor) -> torch.Tensor:
        """Class text features for these images: (C, D), or (B, C, D) for a conditional learner."""
        return self()

    def own_losses(self, image_f: torch.Tensor, text_f: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The learner's weighted terms beside cross-entropy on a batch (none for CoOp)."""
        return {}

    def prepare(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Derive what training needs from the whole few-shot set before the first step (nothing here)."""

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The learned tensors by name: what a prompt file holds and what the optimiser updates."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, arrays: dict[str, np.ndarray], source: Path | str) -> None:
        """Put a prompt file's tensors in place, refusing a missing, extra or misshapen one by name."""
        own = self.trainable_state()
        missing, extra = sorted(set(own) - set(arrays)), sorted(set(arrays) - set(own))
        if missing or extra:
            raise ValueError(f"{source} does not hold this learner's tensors ({type(self).__name__}): "
                             f"missing {missing or 'none'}, unexpected {extra or 'none'}")
        for name, param in own.items():
            if tuple(arrays[name].shape) != tuple(param.shape):
                raise ValueError(f"{source}: {name!r} has shape {tuple(arrays[name].shape)}, expected {tuple(param.shape)}")
            with torch.no_grad():
                param.copy_(torch.from_numpy(np.ascontiguousarray(arrays[name])))

    def similarities(self, inputs: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each input image to each class's prompt, (B, C)."""
        image_f = self.image_features(inputs)
        return cosine(image_f, self.class_features(image_f))


def cosine(image_f: torch.Tensor, text_f: torch.Tensor) -> torch.Tensor:
    """(B, D) x (C, D) or (B, C, D) -> (B, C) similarities of L2-normalised features."""
    return image_f @ text_f.T if text_f.dim() == 2 else torch.einsum("bd,bcd->bc", image_f, text_f)


def encode_text_embeddings(model: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's ``encode_text`` from token embeddings instead of token ids.

    On the CPU the positions after the last EOT are not computed where the tower allows it
    (:func:`_kept_length`): a CoCoOp prompt is ~8 tokens of a 77- (embedded: 24-) token context
    and every test image encodes its own, so this was most of an embedded evaluate job, and a
    VQA prompt trains on question-answer prompts padded to the context (40% of its job).  The
    features are bit for bit those of the full context (see :func:`_attend`), and so are the
    gradients that reach the kept positions: the causal mask gives the dropped ones no path to
    an EOT.  A GPU keeps the full context: its matmul kernels may be picked by the number of rows.
    """
    n = _kept_length(model, tokens) if x.device.type == "cpu" else None
    if n is None:
        return project_text(model, model.transformer(add_positions(model, x), attn_mask=model.attn_mask), tokens)
    mask = model.attn_mask[:n].to(model.transformer.get_cast_dtype())  # (n, context): every key stays
    x = add_positions(model, x)[:, :n]
    for block in model.transformer.resblocks:
        x = x + block.ls_1(_attend(block.attn, block.ln_1(x), mask))
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return project_text(model, x, tokens[:, :n])


def _kept_length(model: nn.Module, tokens: torch.Tensor) -> int | None:
    """Positions up to the last EOT, or None to run the full context: without padding to drop,
    or on a tower whose outputs there may depend on later positions (not causal, not
    EOT-pooled, or not built of open_clip's own batch-first blocks)."""
    from open_clip.transformer import ResidualAttentionBlock

    if len(tokens) == 0 or model.attn_mask is None:
        return None
    if model.text_pool_type == "argmax":
        n = int(tokens.argmax(dim=-1).max()) + 1
    elif model.text_pool_type == "eos":
        n = int((tokens == model.text_eos_id).int().argmax(dim=-1).max()) + 1
    else:
        return None
    blocks_ok = getattr(model.transformer, "batch_first", False) and all(
        type(block) is ResidualAttentionBlock and not hasattr(block, "ln_1_kv") for block in model.transformer.resblocks)
    return n if blocks_ok and n < tokens.shape[1] else None


def _attend(attn: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``attn``'s causal self-attention output for the first ``n`` positions of the context.

    What ``nn.MultiheadAttention`` computes (its packed in-projection, heads, SDPA, out
    projection, in its layouts), with the dropped positions' keys and values zero-filled back to
    the full context length: the attention's reduction then runs over as many keys as it always
    does, and the causal mask gives those keys exactly zero weight, so each kept query's output
    is bit for bit the full context's.  The projections, like the norms and the MLP, act row by
    row, and run on the kept rows only.  ``x``: (B, n, E); ``mask``: the (n, context) rows of
    the causal mask.
    """
    b, n, e = x.shape
    heads, length = attn.num_heads, mask.shape[1]
    proj = F.linear(x.transpose(0, 1), attn.in_proj_weight, attn.in_proj_bias)
    proj = proj.unflatten(-1, (3, e)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()  # (3, n, B, E)
    padding = proj.new_zeros(length - n, b, e)
    q, k, v = proj[0], torch.cat([proj[1], padding]), torch.cat([proj[2], padding])
    q, k, v = (t.view(len(t), b * heads, e // heads).transpose(0, 1).view(b, heads, len(t), e // heads) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, mask[None, None]).permute(2, 0, 1, 3).reshape(n * b, e)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias).view(n, b, e).transpose(0, 1)


def add_positions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Token embeddings -> the text transformer's input (the cast dtype, positions added)."""
    cast_dtype = model.transformer.get_cast_dtype()
    return x.to(cast_dtype) + model.positional_embedding.to(cast_dtype)


def project_text(model: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The text transformer's output -> L2-normalised features: final norm, EOT pooling, projection."""
    from open_clip.transformer import text_global_pool

    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if isinstance(model.text_projection, nn.Linear):
        x = model.text_projection(x)
    elif model.text_projection is not None:
        x = x @ model.text_projection
    return F.normalize(x, dim=-1)
