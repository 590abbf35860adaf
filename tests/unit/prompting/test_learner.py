"""The prompt learner (prompting/learner.py) on a tiny open_clip CLIP: its prompts equal
encode_text, its context is the only new parameter, and a text task's batch encodes only its
own candidate texts (a subset, restored afterwards)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F

from dicap.prompting.cocoop import CoCoOp
from dicap.prompting.cpl import CPL
from dicap.prompting.kgcoop import KgCoOp
from dicap.prompting.learner import PromptLearner, cosine
from dicap.prompting.losses import classification_loss
from dicap.prompting.maple import MaPLe
from dicap.prompting.methods import parse_method
from dicap.prompting.trainer import batch_losses
from helpers import INIT, KG_WEIGHT, NAMES, SCALE, TEXTS, TRAIN, TransformerCalls, tokenize
from helpers import feature_batch as _batch
from helpers import text_learner as _learner

pytestmark = pytest.mark.usefixtures("single_thread")


# --- prompt learner -------------------------------------------------------------------------------


def test_learner_with_template_context_equals_encode_text(clip_model):
    learner = PromptLearner(clip_model, tokenize, NAMES, n_ctx=4, ctx_init="a photo of a")
    with torch.no_grad():
        got = learner()
        want = clip_model.encode_text(tokenize([f"a photo of a {n}." for n in NAMES]), normalize=True)
    assert got.shape == (len(NAMES), 32)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # the comparison is sensitive: the classes, or one changed context word, are far apart
    assert (got @ got.T - torch.eye(len(NAMES))).max() < 0.99
    with torch.no_grad():
        other = clip_model.encode_text(tokenize([f"a photo of the {n}." for n in NAMES]), normalize=True)
    assert (got - other).abs().max() > 1e-2


def test_learner_with_multi_token_class_name_equals_encode_text(clip_model):
    names = ["semicircle", "four", "dark red tee"]
    learner = PromptLearner(clip_model, tokenize, names, n_ctx=4, ctx_init="a photo of a")
    with torch.no_grad():
        want = clip_model.encode_text(tokenize([f"a photo of a {n}." for n in names]), normalize=True)
        torch.testing.assert_close(learner(), want, atol=1e-5, rtol=0)


def test_learner_depends_on_context(clip_model):
    learner = PromptLearner(clip_model, tokenize, NAMES, n_ctx=4, ctx_init="a photo of a")
    with torch.no_grad():
        before = learner().clone()
        learner.ctx.add_(0.5 * torch.randn_like(learner.ctx))
        assert (learner() - before).abs().max() > 1e-3


def test_learner_ctx_is_the_only_new_parameter_and_gets_gradient(clip_model):
    learner = PromptLearner(clip_model, tokenize, NAMES, n_ctx=4, ctx_init=None)
    assert learner.ctx.shape == (4, 32) and learner.ctx.requires_grad
    assert 0 < learner.ctx.std().item() < 0.05  # CoOp's N(0, 0.02^2)
    trainable = [n for n, p in learner.named_parameters() if p.requires_grad]
    assert trainable == ["ctx"]
    learner().sum().backward()
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0


@pytest.mark.parametrize("ctx_init", ["a photo of", "a photo of a small"])
def test_ctx_init_with_wrong_token_count_raises(clip_model, ctx_init):
    with pytest.raises(ValueError, match="n_ctx"):
        PromptLearner(clip_model, tokenize, NAMES, n_ctx=4, ctx_init=ctx_init)


# --- the subset itself -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["coop", "kgcoop"])
def test_subset_encoding_equals_indexing_the_full_encoding(clip_model, kind):
    learner = _learner(clip_model, kind)
    rows = torch.tensor([6, 0, 3, 3, 7])  # any order, repeats allowed
    with torch.no_grad():
        full = learner()
        with TransformerCalls(learner) as calls, learner.subset(rows):
            part, by_image = learner(), learner.class_features(torch.zeros(2, 32))
            prompts = learner.prompts(learner.ctx)
    assert calls.sizes == [len(rows), len(rows)]  # only the subset's prompts are encoded
    torch.testing.assert_close(part, full[rows], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(by_image, full[rows], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prompts, learner.prompts(learner.ctx)[rows])
    assert learner.active is None
    if kind == "kgcoop":
        with torch.no_grad(), learner.subset(rows):
            penalty = learner.own_losses(torch.zeros(2, 32), learner(), torch.zeros(2, dtype=torch.long))["kg"]
        expected = KG_WEIGHT * (1 - F.cosine_similarity(full[rows], learner.hand_written[rows], dim=-1).mean())
        torch.testing.assert_close(penalty, expected, atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="inside the same subset"), learner.subset(rows):
            learner.knowledge_penalty(full)  # all texts' features against the subset's anchors


def test_the_subset_is_restored_on_exit_even_after_an_error(clip_model):
    learner = _learner(clip_model, "coop")
    with pytest.raises(RuntimeError, match="boom"), learner.subset(torch.tensor([1, 2])):
        assert learner.active.tolist() == [1, 2]
        raise RuntimeError("boom")
    assert learner.active is None
    with learner.subset(torch.tensor([4])):
        with learner.subset(torch.tensor([0, 1])):
            assert len(learner()) == 2
        assert learner.active.tolist() == [4]  # nested: the outer subset comes back
        with learner.subset(None):
            assert len(learner()) == len(TEXTS)
    assert learner.active is None


def test_bad_subsets_are_refused(clip_model):
    learner = _learner(clip_model, "coop")
    for rows in (torch.ones(len(TEXTS), dtype=torch.bool), torch.tensor([[0, 1]]), torch.tensor([0.0, 1.0])):
        with pytest.raises(ValueError, match="1-D tensor of text indices"), learner.subset(rows):
            pass
    assert learner.active is None


def test_learners_that_build_their_own_prompts_refuse_a_subset(clip_model):
    assert PromptLearner.supports_subset and KgCoOp.supports_subset
    assert not CoCoOp.supports_subset and not CPL.supports_subset and not MaPLe.supports_subset

    class OwnForward(PromptLearner):
        def forward(self) -> torch.Tensor:
            return super().forward()

    class SaysItCan(OwnForward):
        supports_subset = True

    assert not OwnForward.supports_subset and SaysItCan.supports_subset
    cocoop = CoCoOp(clip_model, tokenize, TEXTS, **INIT)
    with pytest.raises(TypeError, match="CoCoOp cannot encode a subset"), cocoop.subset(torch.tensor([0])):
        pass
    with pytest.raises(TypeError, match="cannot encode a subset"):
        cocoop.active = torch.tensor([0])
    # with candidates it still trains: every text encoded, the others masked, as before
    x, _ = _batch(4)
    candidates = torch.zeros(4, len(TEXTS), dtype=torch.bool)
    candidates[:, 2:6] = True
    y = torch.tensor([2, 3, 4, 5])
    terms = batch_losses(cocoop, parse_method("cocoop"), x, y, None, None, torch.arange(4), TRAIN, SCALE, candidates)
    sims = cosine(x, cocoop.class_features(x))
    torch.testing.assert_close(terms["ce"][1], classification_loss(sims.masked_fill(~candidates, float("-inf")), y, SCALE))


# --- scoring without the padding after the last EOT ------------------------------------------------


def _tower(heads: int, layers: int):
    """A tiny CLIP with ``heads`` attention heads and ``layers`` text blocks (the fixture has one of each)."""
    open_clip = pytest.importorskip("open_clip")
    from helpers import CONTEXT

    torch.manual_seed(heads * 10 + layers)
    model = open_clip.CLIP(
        embed_dim=32,
        vision_cfg={"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 32, "mlp_ratio": 2.0},
        text_cfg={"context_length": CONTEXT, "vocab_size": 49408, "width": 32, "heads": heads, "layers": layers,
                  "mlp_ratio": 2.0},
    )
    with torch.no_grad():
        model.token_embedding.weight.normal_(std=0.5)
        model.positional_embedding.normal_(std=0.1)
    return model.eval().requires_grad_(False)


@contextmanager
def _context_lengths(learner) -> Iterator[list[int]]:
    """The sequence length each text block runs on inside the block (its first norm's input)."""
    lengths: list[int] = []
    handles = [block.ln_1.register_forward_hook(lambda _m, args, _o: lengths.append(args[0].shape[1]))
               for block in learner.clip.transformer.resblocks]
    try:
        yield lengths
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _full_context() -> Iterator[None]:
    """Every encoding runs the whole context, as a GPU does (learner._kept_length says None)."""
    import dicap.prompting.learner as learner_module

    kept = learner_module._kept_length
    learner_module._kept_length = lambda model, tokens: None
    try:
        yield
    finally:
        learner_module._kept_length = kept


def _similarities_and_grads(learner, x) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The similarities and the gradient of a loss on them for every parameter that trains."""
    params = [p for p in learner.parameters() if p.requires_grad]
    sims = learner.similarities(x)
    grads = torch.autograd.grad((sims * torch.linspace(-1, 1, sims.numel()).view_as(sims)).sum(), params)
    return sims.detach(), list(grads)


@pytest.mark.parametrize("heads,layers", [(1, 1), (2, 2), (4, 3)])
@pytest.mark.parametrize("names", [NAMES, ["semicircle", "four", "dark red tee"], ["a"]])
def test_the_text_tower_drops_the_padding_and_keeps_every_bit(heads, layers, names):
    """The blocks run up to the last EOT only, scoring and training alike, and the features,
    CoOp's and CoCoOp's per-image ones, and the gradients of the context (and of CoCoOp's
    meta-network) are bit for bit those of the full context."""
    from helpers import CONTEXT

    model = _tower(heads, layers)
    x, _ = _batch(5)
    for learner in (PromptLearner(model, tokenize, names, **INIT), CoCoOp(model, tokenize, names, **INIT)):
        with torch.no_grad():
            learner.ctx.add_(0.3 * torch.randn_like(learner.ctx))  # away from the template's words
        with _context_lengths(learner) as lengths, _full_context():
            full, full_grads = _similarities_and_grads(learner, x)
        assert set(lengths) == {CONTEXT}
        last_eot = int(learner.tokens.argmax(dim=-1).max())
        with _context_lengths(learner) as lengths, torch.no_grad():
            scored = learner.similarities(x)
        assert set(lengths) == {last_eot + 1} and last_eot + 1 < CONTEXT
        assert torch.equal(scored, full), f"{type(learner).__name__}: {(scored - full).abs().max()}"
        with _context_lengths(learner) as lengths:
            trained, grads = _similarities_and_grads(learner, x)
        assert set(lengths) == {last_eot + 1}
        assert torch.equal(trained, full)
        for grad, full_grad in zip(grads, full_grads, strict=True):
            assert torch.equal(grad, full_grad), f"{type(learner).__name__}: {(grad - full_grad).abs().max()}"


def test_a_tower_not_pooled_at_the_eot_keeps_the_full_context(clip_model):
    """Pooled at the last position, the padding is what is read: nothing may be dropped."""
    from helpers import CONTEXT

    learner = PromptLearner(clip_model, tokenize, NAMES, **INIT)
    clip_model.text_pool_type = "last"
    try:
        with _context_lengths(learner) as lengths, torch.no_grad():
            learner()
    finally:
        clip_model.text_pool_type = "argmax"
    assert set(lengths) == {CONTEXT}
