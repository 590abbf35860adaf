"""The two losses (prompting/losses.py): classification, and DiCap's counterfactual contrastive
term, by hand and on the valid rows only (``cf_valid``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dicap.prompting.learner import cosine
from dicap.prompting.losses import classification_loss, counterfactual_contrastive_loss
from helpers import TRAIN
from helpers import cf_term as _cf_term
from helpers import feature_batch as _batch
from helpers import text_learner as _learner

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


# --- cf_valid: DiCap's term over the examples that have a counterfactual ------------------------------


def test_cf_valid_keeps_the_term_to_the_valid_rows(clip_model):
    learner = _learner(clip_model, "coop")
    x, x_cf = _batch(6)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    valid = torch.tensor([True, False, True, True, False, False])
    x_cf[~valid] = float("nan")  # placeholders of examples without a counterfactual: never read
    got, terms = _cf_term(learner, x, x_cf, y, valid)
    text_f = learner()
    v = valid.nonzero().squeeze(1)
    want = counterfactual_contrastive_loss(cosine(x, text_f)[v, y[v]], cosine(x_cf[v], text_f)[torch.arange(3), y[v]],
                                           TRAIN["cf_temperature"])
    torch.testing.assert_close(got, want)
    (grad,) = torch.autograd.grad(sum(w * t for w, t in terms.values()), learner.ctx)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_cf_valid_all_false_gives_zero_not_nan(clip_model):
    learner = _learner(clip_model, "coop")
    x, x_cf = _batch(3)
    got, terms = _cf_term(learner, x, x_cf, torch.tensor([0, 1, 2]), torch.zeros(3, dtype=torch.bool))
    assert got.item() == 0.0
    (grad,) = torch.autograd.grad(sum(w * t for w, t in terms.values()), learner.ctx)  # the ce still trains
    assert torch.isfinite(grad).all()
    empty = torch.zeros(0, requires_grad=True)
    loss = counterfactual_contrastive_loss(empty, empty, 0.07)
    assert loss.item() == 0.0 and loss.requires_grad
