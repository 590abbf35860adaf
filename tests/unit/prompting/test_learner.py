"""Paper-scale text tasks: a batch encodes only its own candidate texts (the same losses as
encoding all of them, at a fraction of the cost), and DiCap's hard negative skips the
training examples that have no counterfactual (``cf_valid``)."""

from __future__ import annotations

import tempfile

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

open_clip = pytest.importorskip("open_clip")

from dicap.prompting.checkpoint import fingerprint  # noqa: E402
from dicap.prompting.cocoop import CoCoOp  # noqa: E402
from dicap.prompting.cpl import CPL  # noqa: E402
from dicap.prompting.kgcoop import KgCoOp  # noqa: E402
from dicap.prompting.learner import PromptLearner, cosine  # noqa: E402
from dicap.prompting.losses import classification_loss, counterfactual_contrastive_loss  # noqa: E402
from dicap.prompting.maple import MaPLe  # noqa: E402
from dicap.prompting.methods import parse_method  # noqa: E402
from dicap.prompting.trainer import batch_losses, batch_texts, train_context  # noqa: E402
from helpers import NAMES, PARAMS, tokenize  # noqa: E402

# Hypothesis keeps a cache (.hypothesis/) in the working directory: not in the shared checkout.
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="dicap-hypothesis-"))

pytestmark = pytest.mark.usefixtures("single_thread")
INIT = {"n_ctx": 4, "ctx_init": "a photo of a"}
TEXTS = [*NAMES, "ring", "bar", "star", "cross", "arrow"]  # a text task's candidate texts
SCALE, KG_WEIGHT = 20.0, 8.0
TRAIN = {**PARAMS, "cf_temperature": 0.5}  # a softer pair softmax: the term's value is not ~0


def _learner(clip_model, kind: str) -> PromptLearner:
    """CoOp or KgCoOp over TEXTS, its context moved off the template so KgCoOp's penalty is not ~0."""
    learner = KgCoOp(clip_model, tokenize, TEXTS, **INIT, kg_weight=KG_WEIGHT) if kind == "kgcoop" \
        else PromptLearner(clip_model, tokenize, TEXTS, **INIT)
    with torch.no_grad():
        learner.ctx.add_(0.3 * torch.randn(learner.ctx.shape, generator=torch.Generator().manual_seed(1)))
    return learner


def _batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random unit image features and their counterfactuals'."""
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, 32, generator=gen), dim=-1), F.normalize(torch.randn(n, 32, generator=gen), dim=-1)


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


class TransformerCalls:
    """How many sequences each call of the text transformer encodes: the cost of a step."""

    def __init__(self, learner: PromptLearner):
        self.sizes: list[int] = []
        self.handle = learner.clip.transformer.register_forward_hook(lambda _m, args, _o: self.sizes.append(len(args[0])))

    def __enter__(self) -> TransformerCalls:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


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


def _cf_term(learner, x, x_cf, y, cf_valid):
    terms = batch_losses(learner, parse_method("dicap"), x, y, x_cf, None, torch.arange(len(y)), TRAIN, SCALE,
                         cf_valid=cf_valid)
    return terms["cf"][1], terms


def test_cf_valid_all_true_equals_no_mask(clip_model):
    learner = _learner(clip_model, "coop")
    x, x_cf = _batch(6)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    torch.testing.assert_close(_cf_term(learner, x, x_cf, y, torch.ones(6, dtype=torch.bool))[0],
                               _cf_term(learner, x, x_cf, y, None)[0])


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


def test_cf_valid_is_refused_with_dicap_pos_and_checked(clip_model):
    learner = _learner(clip_model, "coop")
    x, x_cf = _batch(4)
    y = torch.tensor([0, 1, 2, 0])
    features = {"train": x, "train_labels": y, "cf": x_cf, "cf_labels": (y + 1) % 3, "cf_valid": torch.ones(4, dtype=torch.bool)}
    params = {**TRAIN, "epochs": 1, "cf_positive_weight": 1.0}
    with pytest.raises(ValueError, match="dicap_pos cannot take 'cf_valid'"):
        train_context(learner, "dicap_pos", features, params, SCALE, seed=0)
    with pytest.raises(ValueError, match="cannot take 'cf_valid'"):
        batch_losses(learner, parse_method("dicap_pos"), x, y, x_cf, (y + 1) % 3, torch.arange(4), params, SCALE,
                     cf_valid=torch.ones(4, dtype=torch.bool))
    for bad, match in ((torch.ones(3, dtype=torch.bool), r"one flag per training example"),
                       (torch.full((4,), 0.5), "must be bool")):
        with pytest.raises(ValueError, match=match):
            train_context(learner, "dicap", {**features, "cf_valid": bad}, params, SCALE, seed=0)
    # 0/1 integers (a cache that stores flags as uint8) are taken as bool
    flags = torch.tensor([1, 0, 1, 1], dtype=torch.uint8)
    train_context(learner, "dicap", {**features, "cf_valid": flags}, params, SCALE, seed=0)


def test_the_checkpoint_fingerprint_covers_cf_valid(clip_model):
    learner = _learner(clip_model, "coop")
    x, x_cf = _batch(4)
    features = {"train": x, "train_labels": torch.tensor([0, 1, 2, 0]), "cf": x_cf}
    state = learner.trainable_state()
    keys = {fingerprint("dicap", 0, TRAIN, SCALE, state, f) for f in (
        features,
        {**features, "cf_valid": torch.ones(4, dtype=torch.bool)},
        {**features, "cf_valid": torch.tensor([True, False, True, True])},
    )}
    assert len(keys) == 3


@pytest.mark.parametrize("kind", ["coop", "kgcoop"])
@pytest.mark.parametrize("per_call", [1, 3, 64])
def test_evaluation_encodes_many_texts_in_chunks_with_the_same_features(clip_model, monkeypatch, kind, per_call):
    """evaluation.prompts.text_features: a test split's texts a few at a time equal them all at
    once, and the learner keeps token ids only (no per-text embedding buffers)."""
    from dicap.evaluation import prompts

    learner = _learner(clip_model, kind)
    assert {name for name, _ in learner.named_buffers(recurse=False)} <= {"tokens", "hand_written"}
    monkeypatch.setattr(prompts, "TEXTS_PER_CALL", per_call)
    with torch.no_grad():
        torch.testing.assert_close(prompts.text_features(learner), learner(), rtol=1e-5, atol=1e-6)
        x, _ = _batch(5)
        sims = prompts.all_similarities(learner, 5, lambda a, b: x[a:b].numpy())
        torch.testing.assert_close(sims, cosine(x, learner()), rtol=1e-5, atol=1e-6)
    assert learner.active is None
