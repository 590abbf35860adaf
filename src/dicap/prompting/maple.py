"""MaPLe (Khattak et al., CVPR 2023, "MaPLe: Multi-modal Prompt Learning").

CoOp learns a context for the text tower only; MaPLe prompts both towers and couples them.
At each depth ``j < depth`` the text tower gets learnable context tokens (``ctx`` at its
input, the "compound" deep prompts before text layers ``1..depth-1``), and the vision
tower gets prompts that are a learned linear projection of the text prompts of the same
depth.  The vision prompts are therefore not free parameters: a gradient on the image side
flows back into the text context, which is what makes the prompting multi-modal.

Because image features now depend on the prompts, MaPLe cannot use cached frozen image
features: it sets ``uses_pixels`` and runs the frozen vision tower itself.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from dicap.prompting.learner import PromptLearner, add_positions, project_text

DEEP_PROMPT_SEED = 1  # ctx's own random init uses seed 0: the deep prompts must not repeat it


class MaPLe(PromptLearner, learner="maple"):
    """MaPLe's compound prompts on a frozen open_clip CLIP.

    Attributes beyond CoOp's ``ctx`` (the first-layer text context, ``(n_ctx, W_text)``):

    - ``depth``: the effective prompt depth, ``min(depth, text layers, vision blocks/stages)``.
      The paper uses 9 on ViT-B/16's 12 layers; the embedded suite's CLIP has only 2 text
      layers, so there MaPLe prompts 2 depths (the input and the second layer);
    - ``deep_text``: ``(depth - 1, n_ctx, W_text)``, the text prompts that replace the context
      positions at the input of text layers ``1..depth-1``;
    - ``vision_proj``: ``depth`` Linear layers, text width -> the vision width at that depth
      (``vision_proj[0]`` maps ``ctx``, ``vision_proj[j]`` maps ``deep_text[j - 1]``).

    Two vision towers are supported:

    - open_clip's ``VisionTransformer`` (the paper's setting): ``n_ctx`` vision prompt tokens
      are appended after the class and patch tokens (after the positional embedding, before
      ``ln_pre``) and replaced by the next depth's prompts at the input of blocks
      ``1..depth-1``; the prompt tokens are dropped before open_clip's own pooling;
    - open_clip's ``TimmModel`` around a timm ResNet (the embedded suite).  **Deviation from
      the paper**: a conv net has no tokens to append, so the vision prompt at depth ``j`` is a
      per-channel bias added to the feature map entering stage ``j`` (``j = 0``: after the stem,
      before ``layer1``; ``j >= 1``: before ``layer{j+1}``).  The bias is the projection of the
      depth's text prompts averaged over the ``n_ctx`` tokens, so the coupling of text and
      vision prompts - MaPLe's defining mechanism - is kept.  Hence ``depth <= 4`` there.  The
      projections start at zero there, so the learner starts at the frozen model's features.

    The frozen CLIP stays in eval mode (BatchNorm on running statistics, no dropout) even when
    the learner is put in training mode.
    """

    def __init__(self, clip_model: nn.Module, tokenizer, class_names: list[str], n_ctx: int, ctx_init: str | None,
                 depth: int = 9, preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None, **recipe: Any):
        super().__init__(clip_model, tokenizer, class_names, n_ctx, ctx_init)
        if depth < 1:
            raise ValueError(f"MaPLe's prompt depth must be at least 1, got {depth}")
        self.clip.eval()
        self.preprocess = preprocess
        self.vision_kind, vision_widths = _vision_tower(clip_model.visual)
        self.depth = min(depth, len(clip_model.transformer.resblocks), len(vision_widths))
        text_width = self.ctx.shape[1]
        generator = torch.Generator().manual_seed(DEEP_PROMPT_SEED)
        self.deep_text = nn.Parameter(torch.randn(self.depth - 1, n_ctx, text_width, generator=generator) * 0.02)
        # nn.Linear's own init, drawn from a fixed seed: a learner is the same whatever ran before it
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.vision_proj = nn.ModuleList(nn.Linear(text_width, w) for w in vision_widths[: self.depth])
        if self.vision_kind == "resnet":
            # An added bias has no neutral random value: with nn.Linear's init it shifts every
            # feature map from the first step (the embedded shapes' novel accuracy ended at 80.9%
            # against zero-shot's 92.7, 3 seeds).  Zero makes the learner start at the frozen
            # model's features, as appended ViT tokens nearly do; the weights still get gradients
            # (text prompt x the bias's gradient), so the coupling trains.
            for proj in self.vision_proj:
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)
        self.to(self.ctx.device)

    def train(self, mode: bool = True) -> MaPLe:
        """Train the prompts only: the frozen CLIP keeps its running statistics and no dropout."""
        super().train(mode)
        self.clip.eval()
        return self

    # --- text side ------------------------------------------------------------------------------------

    def forward(self) -> torch.Tensor:
        """L2-normalised class text features (C, D) with the deep text prompts in place."""
        clip = self.clip
        x = add_positions(clip, self.prompts(self.ctx))
        x = _run_blocks(clip.transformer, x, list(self.deep_text), start=1, attn_mask=clip.attn_mask)
        return project_text(clip, x, self.tokens)

    def class_features(self, image_f: torch.Tensor) -> torch.Tensor:
        """(C, D): MaPLe's text prompts are shared by all images."""
        return self()

    # --- vision side ----------------------------------------------------------------------------------

    def vision_prompts(self) -> list[torch.Tensor]:
        """The vision prompts of each depth, ``(n_ctx, W_vision_j)``: projections of the text prompts."""
        text = [self.ctx, *self.deep_text]
        return [proj(t) for proj, t in zip(self.vision_proj, text)]

    def image_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """L2-normalised (B, D) features of images through the prompted frozen vision tower.

        uint8 images (B, H, W, 3) go through ``preprocess``; float inputs are taken as already
        preprocessed (B, 3, S, S).
        """
        inputs = torch.as_tensor(inputs)  # a numpy batch of images is welcome too
        if not torch.is_floating_point(inputs):
            if self.preprocess is None:
                raise ValueError("MaPLe got integer images but no preprocess to turn them into CLIP input")
            inputs = self.preprocess(inputs)
        weight = next(self.clip.visual.parameters())
        x = inputs.to(device=weight.device, dtype=weight.dtype)
        prompts = self.vision_prompts()
        if self.vision_kind == "vit":
            return F.normalize(self._vit_forward(x, prompts), dim=-1)
        return F.normalize(self._resnet_forward(x, prompts), dim=-1)

    def _vit_forward(self, x: torch.Tensor, prompts: list[torch.Tensor]) -> torch.Tensor:
        """open_clip's ``VisionTransformer.forward`` with ``n_ctx`` prompt tokens at the end of the sequence."""
        v = self.clip.visual
        x = v.conv1(x).flatten(2).transpose(1, 2)  # (B, grid**2, width)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.patch_dropout(x)  # the identity in eval mode, where the frozen tower stays
        x = torch.cat([x, prompts[0].to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
        x = v.ln_pre(x)
        start = x.shape[1] - prompts[0].shape[0]
        x = _run_blocks(v.transformer, x, prompts[1:], start=start, attn_mask=None)
        pooled, _ = v._pool(x[:, :start])  # the image tokens only, as the unprompted tower would pool them
        return pooled @ v.proj if v.proj is not None else pooled

    def _resnet_forward(self, x: torch.Tensor, prompts: list[torch.Tensor]) -> torch.Tensor:
        """The timm trunk + open_clip head, with a per-channel prompt bias entering stages 1..depth.

        Forward-pre hooks add the biases and are removed in ``finally``, so the frozen model is
        left exactly as it was, and the trunk's own forward (stem, stages, pooling) is used.
        """
        stages = _stages(self.clip.visual.trunk)
        handles = []
        try:
            for stage, prompt in zip(stages, prompts):
                bias = prompt.mean(dim=0).to(x.dtype).view(1, -1, 1, 1)
                handles.append(stage.register_forward_pre_hook(lambda _m, args, b=bias: (args[0] + b, *args[1:])))
            return self.clip.visual(x)
        finally:
            for handle in handles:
                handle.remove()


def _vision_tower(visual: nn.Module) -> tuple[str, list[int]]:
    """The vision tower's kind and the prompt width at each depth it can be prompted at."""
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        if not hasattr(visual, "_pool"):
            raise NotImplementedError("MaPLe needs open_clip's VisionTransformer._pool (open_clip >= 2.23)")
        return "vit", [visual.class_embedding.shape[0]] * len(visual.transformer.resblocks)
    if isinstance(visual, TimmModel) and _stages(visual.trunk):
        # the channels a stage takes in: those of its first convolution
        return "resnet", [next(m for m in s.modules() if isinstance(m, nn.Conv2d)).in_channels
                          for s in _stages(visual.trunk)]
    raise NotImplementedError(f"MaPLe supports open_clip's VisionTransformer and timm ResNets, "
                              f"not {type(visual).__name__}")


def _stages(trunk: nn.Module) -> list[nn.Module]:
    """A timm ResNet's stages ``layer1, layer2, ...`` (empty for other trunks)."""
    stages = []
    while hasattr(trunk, f"layer{len(stages) + 1}"):
        stages.append(getattr(trunk, f"layer{len(stages) + 1}"))
    return stages


def _run_blocks(transformer: nn.Module, x: torch.Tensor, deep: list[torch.Tensor], start: int,
                attn_mask: torch.Tensor | None) -> torch.Tensor:
    """Run an open_clip ``Transformer`` block by block on batch-first ``x``, putting ``deep[i - 1]``
    at sequence positions ``start .. start + n_ctx`` before block ``i`` (``1 <= i <= len(deep)``).

    MaPLe *replaces* the previous layer's outputs at the prompt positions rather than adding to
    them, so every depth has its own prompt.  Handles both sequence layouts of open_clip.
    """
    batch_first = getattr(transformer, "batch_first", True)
    seq = 1 if batch_first else 0
    if not batch_first:
        x = x.transpose(0, 1)
    for i, block in enumerate(transformer.resblocks):
        if 1 <= i <= len(deep):
            prompt = deep[i - 1].to(x.dtype)
            n = prompt.shape[0]
            shape = list(x.shape)
            shape[seq] = n
            x = torch.cat([x.narrow(seq, 0, start), prompt.unsqueeze(1 - seq).expand(shape),
                           x.narrow(seq, start + n, x.shape[seq] - start - n)], dim=seq)
        x = block(x, attn_mask=attn_mask)
    return x if batch_first else x.transpose(0, 1)
