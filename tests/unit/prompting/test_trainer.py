"""Prompt learner on a tiny open_clip CLIP, the two losses, and the training loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip")

from dicap.prompting.learner import PromptLearner  # noqa: E402
from dicap.prompting.losses import classification_loss, counterfactual_contrastive_loss  # noqa: E402

from dicap.prompting.trainer import train_context  # noqa: E402
from helpers import CONTEXT, NAMES, PARAMS, tokenize  # noqa: E402
from helpers import prompt_features as _features  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")


def _cf_loss(factual, cf, text, source, tau):
    """DiCap's term from features: the source class's similarity to each image of the pair."""
    rows = torch.arange(len(source))
    return counterfactual_contrastive_loss((factual @ text.T)[rows, source], (cf @ text.T)[rows, source], tau)


# --- losses --------------------------------------------------------------------------------------


def test_counterfactual_loss_matches_hand_computation():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    factual = torch.tensor([[0.8, 0.6], [0.6, 0.8]])
    cf = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    source = torch.tensor([0, 1])
    tau = 0.5
    # pair 0: <t0, f> = 0.8, <t0, f_cf> = 0.0; pair 1: <t1, f> = 0.8, <t1, f_cf> = 0.0
    per_pair = -math.log(math.exp(0.8 / tau) / (math.exp(0.8 / tau) + math.exp(0.0 / tau)))
    loss = _cf_loss(factual, cf, text, source, tau)
    assert loss.item() == pytest.approx(per_pair, rel=1e-6)
    # an asymmetric batch: the two pairs differ, and the loss is their mean
    source = torch.tensor([0, 0])
    p0 = -math.log(math.exp(0.8 / tau) / (math.exp(0.8 / tau) + math.exp(0.0)))
    p1 = -math.log(math.exp(0.6 / tau) / (math.exp(0.6 / tau) + math.exp(1.0 / tau)))
    loss = _cf_loss(factual, cf, text, source, tau)
    assert loss.item() == pytest.approx((p0 + p1) / 2, rel=1e-6)


def test_counterfactual_loss_prefers_factual_closer_to_its_prompt():
    gen = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(3, 8, generator=gen), dim=-1)
    source = torch.tensor([0, 1, 2])
    near = F.normalize(text + 0.1 * torch.randn(3, 8, generator=gen), dim=-1)
    far = F.normalize(torch.randn(3, 8, generator=gen), dim=-1)
    good = _cf_loss(near, far, text, source, 0.07)
    bad = _cf_loss(far, near, text, source, 0.07)
    assert good < math.log(2) < bad
    # identical factual and counterfactual cannot be told apart: exactly log 2
    same = _cf_loss(near, near, text, source, 0.07)
    assert same.item() == pytest.approx(math.log(2), rel=1e-6)


def test_counterfactual_loss_gradient_reaches_source_text_features():
    gen = torch.Generator().manual_seed(1)
    text = F.normalize(torch.randn(4, 8, generator=gen), dim=-1).requires_grad_(True)
    fact, cf = torch.randn(2, 8, generator=gen), torch.randn(2, 8, generator=gen)
    _cf_loss(fact, cf, text, torch.tensor([1, 3]), 0.1).backward()
    norms = text.grad.norm(dim=1)
    assert norms[1] > 0 and norms[3] > 0
    assert norms[0] == 0 and norms[2] == 0  # only the source classes' prompts are involved
    # the gradient pushes the prompt towards factual minus counterfactual
    assert (-text.grad[1] @ (fact[0] - cf[0])) > 0


def test_classification_loss_matches_cross_entropy():
    gen = torch.Generator().manual_seed(2)
    img = F.normalize(torch.randn(5, 8, generator=gen), dim=-1)
    text = F.normalize(torch.randn(3, 8, generator=gen), dim=-1)
    labels = torch.tensor([0, 2, 1, 1, 0])
    expected = F.cross_entropy(12.5 * img @ text.T, labels)
    torch.testing.assert_close(classification_loss(img @ text.T, labels, 12.5), expected)
    assert not torch.allclose(classification_loss(img @ text.T, labels, 1.0), expected)


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


# --- training loop --------------------------------------------------------------------------------

def _loss(learner: PromptLearner, feats: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        return classification_loss(feats["train"] @ learner().T, feats["train_labels"], 20.0).item()


def test_coop_changes_context_and_lowers_loss(clip_model):
    learner = PromptLearner(clip_model, tokenize, NAMES, n_ctx=4, ctx_init="a photo of a")
    feats = _features()
    ctx0, weights0 = learner.ctx.detach().clone(), {k: v.clone() for k, v in clip_model.state_dict().items()}
    loss0 = _loss(learner, feats)
    history = train_context(learner, "coop", feats, PARAMS, logit_scale=20.0, seed=0)
    assert len(history) == PARAMS["epochs"]
    assert [h["epoch"] for h in history] == list(range(1, PARAMS["epochs"] + 1))
    assert not torch.allclose(learner.ctx.detach(), ctx0)
    assert _loss(learner, feats) < 0.8 * loss0
    assert history[-1]["ce"] < history[0]["ce"]
    assert all("cf" not in h for h in history)
    # the frozen CLIP is untouched: only the context is learned
    for k, v in clip_model.state_dict().items():
        torch.testing.assert_close(v, weights0[k], atol=0, rtol=0)


def test_training_is_deterministic_per_seed(clip_model):
    feats, params = _features(), {**PARAMS, "epochs": 2}
    ctxs = []
    for seed in (3, 3, 4):
        learner = PromptLearner(clip_model, tokenize, NAMES, n_ctx=4, ctx_init="a photo of a")
        train_context(learner, "coop", feats, params, logit_scale=20.0, seed=seed)
        ctxs.append(learner.ctx.detach().clone())
    torch.testing.assert_close(ctxs[0], ctxs[1], atol=0, rtol=0)
    assert not torch.equal(ctxs[0], ctxs[2])  # the batch order depends on the seed


def test_zeroshot_leaves_context_unchanged(clip_model):
    learner = PromptLearner(clip_model, tokenize, NAMES, n_ctx=4, ctx_init="a photo of a")
    ctx0 = learner.ctx.detach().clone()
    assert train_context(learner, "zeroshot", _features(), PARAMS, logit_scale=20.0, seed=0) == []
    torch.testing.assert_close(learner.ctx.detach(), ctx0, atol=0, rtol=0)


def test_dicap_trains_with_counterfactual_term(clip_model):
    learner = PromptLearner(clip_model, tokenize, NAMES, n_ctx=4, ctx_init="a photo of a")
    feats = _features()
    ctx0 = learner.ctx.detach().clone()
    history = train_context(learner, "dicap", feats, PARAMS, logit_scale=20.0, seed=0)
    assert not torch.allclose(learner.ctx.detach(), ctx0)
    assert all(h["cf"] > 0 for h in history)
    assert history[-1]["cf"] < history[0]["cf"]
    assert all("cf_pos" not in h for h in history)  # the hard negative alone


def _trained(clip_model, method: str, **params) -> torch.Tensor:
    learner = PromptLearner(clip_model, tokenize, NAMES, n_ctx=4, ctx_init="a photo of a")
    train_context(learner, method, _features(), {**PARAMS, "epochs": 2, **params}, logit_scale=20.0, seed=0)
    return learner.ctx.detach().clone()


@pytest.mark.parametrize("cf_weight", [0.0, 0.5, 2.0])
def test_loss_weights_are_independent_keys(clip_model, cf_weight):
    """dicap ignores cf_positive_weight; dicap_pos with cf_weight 0 still trains its positive term
    (before, the positive weight was multiplied by cf_weight, so 0 gave plain CoOp)."""
    torch.testing.assert_close(_trained(clip_model, "dicap", cf_weight=cf_weight, cf_positive_weight=0.0),
                               _trained(clip_model, "dicap", cf_weight=cf_weight, cf_positive_weight=3.0), atol=0, rtol=0)
    positive = _trained(clip_model, "dicap_pos", cf_weight=cf_weight, cf_positive_weight=1.0)
    assert not torch.equal(positive, _trained(clip_model, "dicap", cf_weight=cf_weight))
    torch.testing.assert_close(_trained(clip_model, "dicap_pos", cf_weight=cf_weight, cf_positive_weight=0.0),
                               _trained(clip_model, "dicap", cf_weight=cf_weight), atol=0, rtol=0)
    if cf_weight == 0.0:
        torch.testing.assert_close(_trained(clip_model, "dicap", cf_weight=0.0), _trained(clip_model, "coop"), atol=0, rtol=0)


def test_dicap_pos_trains_the_counterfactual_as_its_target_class(clip_model):
    learner = PromptLearner(clip_model, tokenize, NAMES, n_ctx=4, ctx_init="a photo of a")
    feats = _features()

    def cf_loss() -> float:
        with torch.no_grad():
            return classification_loss(feats["cf"] @ learner().T, feats["cf_labels"].long(), 20.0).item()

    before = cf_loss()
    history = train_context(learner, "dicap_pos", feats, PARAMS, logit_scale=20.0, seed=0)
    assert all(h["cf_pos"] > 0 for h in history) and history[-1]["cf_pos"] < history[0]["cf_pos"]
    assert cf_loss() < before


def test_dicap_without_counterfactuals_raises(clip_model):
    learner = PromptLearner(clip_model, tokenize, NAMES, n_ctx=4, ctx_init="a photo of a")
    feats = _features()
    no_cf = {k: v for k, v in feats.items() if not k.startswith("cf")}
    with pytest.raises(ValueError, match="counterfactual"):
        train_context(learner, "dicap", no_cf, PARAMS, logit_scale=20.0, seed=0)
    with pytest.raises(ValueError, match="counterfactual"):
        train_context(learner, "dicap", {**feats, "cf": feats["cf"][:-1]}, PARAMS, logit_scale=20.0, seed=0)
    with pytest.raises(ValueError, match="unknown method"):
        train_context(learner, "cocoop_pos", feats, PARAMS, logit_scale=20.0, seed=0)
    with pytest.raises(ValueError, match="trains a cocoop learner, not coop"):
        train_context(learner, "dicap_cocoop", feats, PARAMS, logit_scale=20.0, seed=0)
