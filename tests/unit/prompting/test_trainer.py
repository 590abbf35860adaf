"""The training loop (prompting/trainer.py) on a tiny open_clip CLIP: CoOp and DiCap training,
determinism per seed, the loss weights; paper-scale text tasks, where a batch encodes only its
own candidate texts (the same losses as all of them), and DiCap's term skips the examples that
have no counterfactual (``cf_valid``)."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicap.prompting.kgcoop import KgCoOp
from dicap.prompting.learner import PromptLearner, cosine
from dicap.prompting.losses import classification_loss, counterfactual_contrastive_loss
from dicap.prompting.methods import parse_method
from dicap.prompting.trainer import batch_losses, batch_texts, epoch_line, train_context
from helpers import KG_WEIGHT, NAMES, PARAMS, SCALE, TEXTS, TRAIN, TransformerCalls, tokenize
from helpers import cf_term as _cf_term
from helpers import feature_batch as _batch
from helpers import prompt_features as _features
from helpers import text_learner as _learner

pytestmark = pytest.mark.usefixtures("single_thread")


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


@pytest.mark.parametrize("method", ["coop", "dicap"])
def test_every_epoch_logs_one_line_with_its_losses(clip_model, caplog, method):
    learner = PromptLearner(clip_model, tokenize, NAMES, n_ctx=4, ctx_init="a photo of a")
    with caplog.at_level(logging.INFO, logger="dicap.prompting.trainer"):
        history = train_context(learner, method, _features(), {**PARAMS, "epochs": 3}, logit_scale=20.0, seed=0)
    lines = [r.getMessage() for r in caplog.records if r.name == "dicap.prompting.trainer"]
    assert len(lines) == len(history) == 3  # one line an epoch, none a step
    for line, epoch in zip(lines, history):
        assert line.startswith(f"{method} epoch {epoch['epoch']}/3: ")
        assert all(f"{name} {value:.4f}" in line for name, value in epoch.items() if name != "epoch")


@pytest.mark.parametrize("losses, expected", [
    ({"epoch": 1, "ce": 1.23456}, "coop epoch 1/5: ce 1.2346 (3 s)"),
    ({"epoch": 5, "ce": 0.5, "cf": 0.25, "kg": 0.001}, "coop epoch 5/5: ce 0.5000 cf 0.2500 kg 0.0010 (3 s)"),
])
def test_an_epoch_line_names_the_epoch_and_each_term(losses, expected):
    assert epoch_line("coop", losses, 5, 2.6) == expected


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


@pytest.mark.parametrize("cf_positive_weight", [0.5, 2.0])
def test_dicap_label_is_dicap_pos_without_the_hard_negative(clip_model, cf_positive_weight):
    """dicap_label reads cf_positive_weight only: the hard negative's weight and temperature change
    nothing, it equals dicap_pos with cf_weight 0, and with its own weight 0 it is plain CoOp."""
    label = _trained(clip_model, "dicap_label", cf_positive_weight=cf_positive_weight)
    for other in ({"cf_weight": 0.0}, {"cf_weight": 3.0, "cf_temperature": 0.5}):
        torch.testing.assert_close(_trained(clip_model, "dicap_label", cf_positive_weight=cf_positive_weight, **other),
                                   label, atol=0, rtol=0)
    torch.testing.assert_close(_trained(clip_model, "dicap_pos", cf_weight=0.0, cf_positive_weight=cf_positive_weight),
                               label, atol=0, rtol=0)
    assert not torch.equal(label, _trained(clip_model, "dicap_pos", cf_weight=1.0, cf_positive_weight=cf_positive_weight))
    assert not torch.equal(label, _trained(clip_model, "coop"))
    torch.testing.assert_close(_trained(clip_model, "dicap_label", cf_positive_weight=0.0), _trained(clip_model, "coop"),
                               atol=0, rtol=0)


@pytest.mark.parametrize("method", ["dicap_pos", "dicap_label"])
def test_the_labelled_readings_train_the_counterfactual_as_its_target_class(clip_model, method):
    learner = PromptLearner(clip_model, tokenize, NAMES, n_ctx=4, ctx_init="a photo of a")
    feats = _features()

    def cf_loss() -> float:
        with torch.no_grad():
            return classification_loss(feats["cf"] @ learner().T, feats["cf_labels"].long(), 20.0).item()

    before = cf_loss()
    history = train_context(learner, method, feats, {**PARAMS, "cf_positive_weight": 1.0}, logit_scale=20.0, seed=0)
    assert all(h["cf_pos"] > 0 for h in history) and history[-1]["cf_pos"] < history[0]["cf_pos"]
    assert cf_loss() < before
    assert all(("cf" in h) == (method == "dicap_pos") for h in history)  # dicap_label: no hard negative


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


@pytest.mark.parametrize("method", ["dicap_label", "dicap_pos"])
def test_the_labelled_readings_need_the_counterfactuals_and_their_targets(clip_model, method):
    learner = PromptLearner(clip_model, tokenize, NAMES, n_ctx=4, ctx_init="a photo of a")
    feats = _features()
    with pytest.raises(ValueError, match=f"{method} needs one counterfactual per training image"):
        train_context(learner, method, {k: v for k, v in feats.items() if k != "cf"}, PARAMS, logit_scale=20.0, seed=0)
    for broken in ({k: v for k, v in feats.items() if k != "cf_labels"}, {**feats, "cf_labels": feats["cf_labels"][:-1]}):
        with pytest.raises(ValueError, match=f"{method} needs each counterfactual's target class"):
            train_context(learner, method, broken, PARAMS, logit_scale=20.0, seed=0)


def _reference(learner: PromptLearner, x, x_cf, y, candidates, kg_rows=None) -> dict[str, torch.Tensor]:
    """The losses by full encoding: every text's feature, then the candidate mask; KgCoOp's
    penalty on ``kg_rows`` of the full features."""
    text_f = learner()
    sims, cf_sims = cosine(x, text_f), cosine(x_cf, text_f)
    rows = torch.arange(len(y))
    out = {"ce": classification_loss(sims.masked_fill(~candidates, float("-inf")), y, SCALE),
           "cf": counterfactual_contrastive_loss(sims[rows, y], cf_sims[rows, y], TRAIN["cf_temperature"])}
    if isinstance(learner, KgCoOp):
        keep = slice(None) if kg_rows is None else kg_rows
        hand = learner.hand_written[keep]
        out["kg"] = KG_WEIGHT * (1 - F.cosine_similarity(text_f[keep], hand, dim=-1).mean())
    return out


def test_batch_losses_resets_the_subset_after_the_batch_and_on_error(clip_model, monkeypatch):
    learner = _learner(clip_model, "kgcoop")
    x, _ = _batch(3)
    candidates = torch.zeros(3, len(TEXTS), dtype=torch.bool)
    candidates[:, :4] = True
    y = torch.tensor([0, 1, 2])
    batch_losses(learner, parse_method("kgcoop"), x, y, None, None, torch.arange(3), TRAIN, SCALE, candidates)
    assert learner.active is None

    def fail(*args):
        assert learner.active is not None  # it failed inside the subset
        raise RuntimeError("a step that fails")

    monkeypatch.setattr(learner, "own_losses", fail)
    with pytest.raises(RuntimeError, match="a step that fails"):
        batch_losses(learner, parse_method("kgcoop"), x, y, None, None, torch.arange(3), TRAIN, SCALE, candidates)
    assert learner.active is None


def test_batch_texts_are_the_candidates_and_labels_with_label_positions():
    candidates = torch.tensor([[0, 1, 0, 1, 0, 0], [0, 0, 0, 1, 0, 0]], dtype=torch.bool)
    cols, y = batch_texts(candidates, torch.tensor([3, 5]))  # 5 is not a candidate: still encoded
    assert cols.tolist() == [1, 3, 5] and y.tolist() == [1, 2]


# --- batch_losses with candidates: the subset path against full encoding -----------------------------


@st.composite
def candidate_batches(draw):
    """(candidates, labels): 1-6 examples over TEXTS, each label among its row's candidates."""
    n = draw(st.integers(1, 6))
    rows = [draw(st.lists(st.booleans(), min_size=len(TEXTS), max_size=len(TEXTS))) for _ in range(n)]
    labels = []
    for row in rows:
        label = draw(st.integers(0, len(TEXTS) - 1))
        row[label] = True
        labels.append(label)
    return torch.tensor(rows, dtype=torch.bool), torch.tensor(labels)


@pytest.mark.parametrize("method", ["dicap", "dicap_kgcoop"])
@settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=candidate_batches())
def test_subset_losses_equal_full_encoding_with_a_mask(clip_model, method, batch):
    candidates, y = batch
    spec = parse_method(method)
    learner = _learner(clip_model, spec.learner)
    x, x_cf = _batch(len(y))
    idx = torch.arange(len(y))
    with TransformerCalls(learner) as calls:
        terms = batch_losses(learner, spec, x, y, x_cf, None, idx, TRAIN, SCALE, candidates)
    used = candidates.any(0).nonzero().squeeze(1)
    assert calls.sizes == [len(used)]  # one call, the batch's texts only
    with torch.no_grad():
        want = _reference(learner, x, x_cf, y, candidates, kg_rows=used)
    assert set(terms) == set(want)
    for name, value in want.items():
        torch.testing.assert_close(terms[name][1].detach(), value, atol=1e-5, rtol=1e-5, msg=name)
    assert learner.active is None


def test_subset_gradients_equal_full_encodings(clip_model):
    """The step moves the context as full encoding would (the kg term aside, by design)."""
    learner = _learner(clip_model, "coop")
    candidates = torch.zeros(4, len(TEXTS), dtype=torch.bool)
    candidates[0, [0, 2]] = candidates[1, [2, 5]] = candidates[2, [7, 0]] = candidates[3, [5, 7, 1]] = True
    y = torch.tensor([2, 5, 0, 7])
    x, x_cf = _batch(4)
    terms = batch_losses(learner, parse_method("dicap"), x, y, x_cf, None, torch.arange(4), TRAIN, SCALE, candidates)
    (got,) = torch.autograd.grad(terms["ce"][1] + terms["cf"][1], learner.ctx)
    want_terms = _reference(learner, x, x_cf, y, candidates)
    (want,) = torch.autograd.grad(want_terms["ce"] + want_terms["cf"], learner.ctx)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_without_candidates_the_losses_are_unchanged(clip_model):
    """Classification (no candidates) encodes every text exactly as before: the same bits."""
    learner = _learner(clip_model, "kgcoop")
    x, x_cf = _batch(5)
    y = torch.tensor([0, 1, 2, 3, 4])
    terms = batch_losses(learner, parse_method("dicap_kgcoop"), x, y, x_cf, None, torch.arange(5), TRAIN, SCALE)
    text_f = learner()
    sims, cf_sims = cosine(x, text_f), cosine(x_cf, text_f)
    rows = torch.arange(5)
    assert torch.equal(terms["ce"][1], classification_loss(sims, y, SCALE))
    assert torch.equal(terms["kg"][1], learner.own_losses(x, text_f, y)["kg"])
    assert torch.equal(terms["cf"][1], counterfactual_contrastive_loss(sims[rows, y], cf_sims[rows, y], TRAIN["cf_temperature"]))


def test_candidates_of_the_wrong_width_are_refused(clip_model):
    learner = _learner(clip_model, "coop")
    x, _ = _batch(2)
    with pytest.raises(ValueError, match="candidates must be"):
        batch_losses(learner, parse_method("coop"), x, torch.tensor([0, 1]), None, None, torch.arange(2), TRAIN, SCALE,
                     torch.ones(2, len(TEXTS) - 1, dtype=torch.bool))


# --- cf_valid: DiCap's term over the examples that have a counterfactual ------------------------------


def test_cf_valid_all_true_equals_no_mask(clip_model):
    learner = _learner(clip_model, "coop")
    x, x_cf = _batch(6)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    torch.testing.assert_close(_cf_term(learner, x, x_cf, y, torch.ones(6, dtype=torch.bool))[0],
                               _cf_term(learner, x, x_cf, y, None)[0])


def test_training_with_candidates_and_cf_valid_runs(clip_model):
    """One epoch of a text task's DiCap-KgCoOp with half the examples lacking a counterfactual."""
    learner = _learner(clip_model, "kgcoop")
    n = 8
    x, x_cf = _batch(n, seed=3)
    y = torch.arange(n) % len(TEXTS)
    candidates = torch.rand(n, len(TEXTS), generator=torch.Generator().manual_seed(0)) < 0.4
    candidates[torch.arange(n), y] = True
    cf_valid = torch.arange(n) % 2 == 0
    features = {"train": x, "train_labels": y, "cf": x_cf, "cf_labels": y, "train_candidates": candidates,
                "cf_valid": cf_valid}
    before = learner.ctx.detach().clone()
    history = train_context(learner, "dicap_kgcoop", features, {**TRAIN, "epochs": 1, "batch_size": 4, "kg_weight": KG_WEIGHT},
                            SCALE, seed=0)
    assert len(history) == 1 and all(torch.isfinite(torch.tensor(v)) for v in history[0].values())
    assert {"ce", "kg", "cf"} <= set(history[0]) and not torch.equal(learner.ctx, before)
    assert learner.active is None


@pytest.mark.parametrize("method", ["dicap_pos", "dicap_label"])
def test_cf_valid_is_refused_with_the_labelled_readings_and_checked(clip_model, method):
    learner = _learner(clip_model, "coop")
    x, x_cf = _batch(4)
    y = torch.tensor([0, 1, 2, 0])
    features = {"train": x, "train_labels": y, "cf": x_cf, "cf_labels": (y + 1) % 3, "cf_valid": torch.ones(4, dtype=torch.bool)}
    params = {**TRAIN, "epochs": 1, "cf_positive_weight": 1.0}
    with pytest.raises(ValueError, match=f"{method} cannot take 'cf_valid'"):
        train_context(learner, method, features, params, SCALE, seed=0)
    with pytest.raises(ValueError, match="cannot take 'cf_valid'"):
        batch_losses(learner, parse_method(method), x, y, x_cf, (y + 1) % 3, torch.arange(4), params, SCALE,
                     cf_valid=torch.ones(4, dtype=torch.bool))
    for bad, match in ((torch.ones(3, dtype=torch.bool), r"one flag per training example"),
                       (torch.full((4,), 0.5), "must be bool")):
        with pytest.raises(ValueError, match=match):
            train_context(learner, "dicap", {**features, "cf_valid": bad}, params, SCALE, seed=0)
    # 0/1 integers (a cache that stores flags as uint8) are taken as bool
    flags = torch.tensor([1, 0, 1, 1], dtype=torch.uint8)
    train_context(learner, "dicap", {**features, "cf_valid": flags}, params, SCALE, seed=0)


def test_masked_cross_entropy_ignores_texts_outside_the_candidates(clip_model):
    """A VQA example's loss and gradient are those of its own statements alone."""
    from dicap.prompting.learner import PromptLearner, cosine
    from dicap.prompting.methods import parse_method
    from dicap.prompting.trainer import batch_losses
    from helpers import NAMES, tokenize

    names = [*NAMES, "ring", "bar"]  # five texts, three of them each example's candidates
    learner = PromptLearner(clip_model, tokenize, names, 4, None)
    x = torch.nn.functional.normalize(torch.randn(6, 32), dim=-1)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    mask = torch.zeros(6, len(names), dtype=torch.bool)
    mask[:, :3] = True
    spec = parse_method("coop")
    terms = batch_losses(learner, spec, x, y, None, None, torch.arange(6), {}, 10.0, mask)
    sims = cosine(x, learner.class_features(x))
    expected = torch.nn.functional.cross_entropy(10.0 * sims[:, :3], y)
    assert terms["ce"][1].item() == pytest.approx(expected.item(), rel=1e-5)
    unmasked = batch_losses(learner, spec, x, y, None, None, torch.arange(6), {}, 10.0)
    assert unmasked["ce"][1].item() > terms["ce"][1].item()  # the two other texts add to the softmax's denominator
