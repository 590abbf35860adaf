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


# --- why the hard negative cannot unlearn a background (docs/method.md) -------------------------------
#
# A frozen image encoder's feature is f = (c_y + b) / sqrt(2): a class part and a background part, in
# orthogonal subspaces.  The few-shot images are biased (9 of 10 shots of class y on y's paired
# background b_y); the counterfactual keeps the background and changes the class, f_cf = (c_y' + b) / sqrt(2).

K = 4  # classes (and backgrounds, one paired with each class)
# A logit scale at which the initial prompts are unsure (mean probability of the right class 0.5-0.7),
# as the tiny CLIP's are: a saturated softmax has no gradient left to compare.
UNSURE = 3.0


class _Geometry:
    """Class directions c_k and background directions b_k (an orthonormal set in general position), the
    biased shots, their counterfactuals, and text features near the class directions (the initial context)."""

    def __init__(self, seed: int, dim: int = 12, shots: int = 10) -> None:
        gen = torch.Generator().manual_seed(seed)
        basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
        self.c, self.b = basis[:, :K].T, basis[:, K : 2 * K].T  # (K, D) each
        self.y = torch.arange(K).repeat_interleave(shots)
        background = self.y.clone()
        background[::shots] = (self.y[::shots] + 2) % K  # one shot in ten on another class's background
        self.background = background
        self.y_cf = (self.y + 1) % K
        self.f = (self.c[self.y] + self.b[background]) / 2**0.5
        self.f_cf = (self.c[self.y_cf] + self.b[background]) / 2**0.5
        noise = torch.randn(K, dim, generator=gen, dtype=torch.float64)
        self.text = F.normalize(self.c + 0.3 * noise, dim=-1).requires_grad_(True)

    def grad(self, loss: torch.Tensor) -> torch.Tensor:
        (g,) = torch.autograd.grad(loss, self.text, retain_graph=True)  # a batch's terms share a graph
        return g

    def hard_negative(self, tau: float, rows: slice = slice(None)) -> torch.Tensor:
        pairs = torch.arange(len(self.y))[rows]
        return counterfactual_contrastive_loss((self.f @ self.text.T)[pairs, self.y[pairs]],
                                               (self.f_cf @ self.text.T)[pairs, self.y[pairs]], tau)

    def background_share(self, g: torch.Tensor) -> torch.Tensor:
        """(K, K): the descent direction -g[k]'s component along each background b_j, over |g[k]|."""
        return -(g @ self.b.T) / g.norm(dim=1, keepdim=True)


class _FreeText(torch.nn.Module):
    """A stand-in learner for the trainer's terms: cached features in, the text features as they stand."""

    conditional, supports_subset = False, False

    def __init__(self, text: torch.Tensor) -> None:
        super().__init__()
        self.text = text

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def class_features(self, image_f: torch.Tensor) -> torch.Tensor:
        return self.text

    def own_losses(self, image_f, text_f, labels) -> dict:
        return {}


SEEDS_AND_TEMPERATURES = [(seed, tau) for seed in (0, 1, 2) for tau in (0.07, 0.5)]


@pytest.mark.parametrize(("seed", "tau"), SEEDS_AND_TEMPERATURES)
def test_the_hard_negatives_gradient_is_along_f_minus_f_cf_and_blind_to_the_background(seed, tau):
    """One pair: d loss / d t_y = -(1 - p) / tau x (f - f_cf), exactly, and f - f_cf = (c_y - c_y') / sqrt(2)
    has no background in it.  A batch: no class's prompt gets any background component.  A loss that let the
    factual's or the counterfactual's own background into the gradient (anything but their difference)
    fails here."""
    world = _Geometry(seed)
    i = 1
    g = world.grad(world.hard_negative(tau, slice(i, i + 1)))
    source = int(world.y[i])
    assert g[torch.arange(K) != source].abs().max() == 0  # only the source class's prompt
    direction = world.f[i] - world.f_cf[i]
    assert F.cosine_similarity(-g[source], direction, dim=0) > 1 - 1e-9
    p = torch.softmax(torch.stack([world.f[i] @ world.text[source], world.f_cf[i] @ world.text[source]]) / tau, 0)[0]
    torch.testing.assert_close(g[source], -(1 - p.detach()) / tau * direction)
    batch = world.grad(world.hard_negative(tau))
    assert batch.norm(dim=1).min() > 0
    assert world.background_share(batch).abs().max() < 1e-9


@pytest.mark.parametrize(("seed", "tau"), SEEDS_AND_TEMPERATURES)
def test_cross_entropy_on_biased_shots_learns_the_background_and_the_labelled_counterfactual_unlearns_it(seed, tau):
    """Cross-entropy's descent moves each class's prompt towards its paired background.  The counterfactual
    as a labelled example of y_cf moves the source prompt away from that background and y_cf's towards
    it: the background gets opposite signs under two classes, so it can be told apart from the class."""
    world = _Geometry(seed)
    ce = world.background_share(world.grad(classification_loss(world.f @ world.text.T, world.y, UNSURE)))
    labelled = world.background_share(world.grad(classification_loss(world.f_cf @ world.text.T, world.y_cf, UNSURE)))
    hard = world.background_share(world.grad(world.hard_negative(tau)))
    for k in range(K):
        assert ce[k, k] > 0.25  # cross-entropy: a quarter or more of the step along the paired background
        assert labelled[k, k] < 0 < labelled[(k + 1) % K, k]  # source away from b_k, its y_cf towards it
        assert abs(hard[k, k]) < 1e-9 < ce[k, k]


@pytest.mark.parametrize("method", ["dicap", "dicap_pos", "dicap_label"])
def test_each_readings_terms_in_the_trainer_keep_the_gradient_property(method):
    """The same property through the trainer's terms: the hard negative ("cf") never moves a prompt along a
    background; the labelled counterfactual ("cf_pos") moves source and target in opposite directions."""
    from dicap.prompting.methods import parse_method
    from dicap.prompting.trainer import batch_losses

    world = _Geometry(0)
    parsed = parse_method(method)
    params = {"cf_weight": 1.0, "cf_temperature": 0.07, "cf_positive_weight": 1.0}
    terms = batch_losses(_FreeText(world.text), parsed, world.f, world.y, world.f_cf, world.y_cf,
                         torch.arange(len(world.y)), params, UNSURE)
    assert ("cf" in terms) == parsed.hard_negative and ("cf_pos" in terms) == parsed.cf_positive
    if parsed.hard_negative:
        assert world.background_share(world.grad(terms["cf"][1])).abs().max() < 1e-9
    if parsed.cf_positive:
        share = world.background_share(world.grad(terms["cf_pos"][1]))
        assert all(share[k, k] < 0 < share[(k + 1) % K, k] for k in range(K))
