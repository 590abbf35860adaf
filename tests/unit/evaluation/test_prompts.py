"""Scoring with a learned prompt (evaluation/prompts.py): chunked encodings give the same
similarities as one call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicap.prompting.cocoop import CoCoOp
from dicap.prompting.learner import cosine
from helpers import INIT, NAMES, prompt_features, tokenize
from helpers import feature_batch as _batch
from helpers import text_learner as _learner

pytestmark = pytest.mark.usefixtures("single_thread")


def test_scoring_a_conditional_learner_in_chunks_gives_the_same_similarities(clip_model, monkeypatch):
    """Chunks sized by prompts per call (a thousand classes: a few images) change nothing but memory."""
    from dicap.evaluation import prompts

    learner = CoCoOp(clip_model, tokenize, NAMES, **INIT)
    images = prompt_features()["train"].numpy()
    whole = prompts.all_similarities(learner, len(images), lambda a, b: images[a:b])
    monkeypatch.setattr(prompts, "PROMPTS_PER_CALL", 2 * len(NAMES))  # two images per call
    calls = []
    chunked = prompts.all_similarities(learner, len(images), lambda a, b: calls.append(b - a) or images[a:b])
    assert max(calls) == 2 and sum(calls) == len(images)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


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


@pytest.mark.parametrize("splits", [["test"], ["background", "style"]])
def test_a_learned_context_is_scored_among_every_class_of_another_store(clip_model, tmp_path, splits):
    """score_transfer: the learner is rebuilt on the target's classes around the saved context
    (cross-dataset: other classes), and each split's accuracy is among all of them."""
    from types import SimpleNamespace

    from dicap.evaluation.prompts import score_transfer
    from dicap.io import save_arrays
    from dicap.prompting.learner import PromptLearner

    trained = _learner(clip_model, "coop")  # learned on TEXTS
    prompt = tmp_path / "coop.safetensors"
    save_arrays(prompt, {k: v.detach().numpy() for k, v in trained.trainable_state().items()})
    on_target = PromptLearner(clip_model, tokenize, NAMES, **INIT)
    on_target.load_trainable_state({k: v.detach().numpy() for k, v in trained.trainable_state().items()}, prompt)
    x, _ = _batch(12)
    with torch.no_grad():
        labels = cosine(x, on_target()).argmax(1)  # what the context says: 100% when it is the one scored
        untrained = (cosine(x, PromptLearner(clip_model, tokenize, NAMES, **INIT)()).argmax(1) == labels).float().mean()
    features = {**{s: x.numpy() for s in splits}, **{f"{s}_labels": labels.numpy() for s in splits}}
    store = SimpleNamespace(classes=NAMES, transfer_splits=splits, transfer_domain=lambda split, target: f"{target}:{split}")
    bundle = SimpleNamespace(model=clip_model, tokenizer=tokenize, pixels_to_input=None)
    table = score_transfer(bundle, store, features, {"coop": prompt}, {"coop": INIT}, 1, "shifts", tmp_path / "out.csv")
    assert list(table["split"]) == splits and list(table["accuracy"]) == pytest.approx([100.0] * len(splits))
    assert list(table["domain"]) == [f"shifts:{s}" for s in splits]  # the store names each split's column (test_store.py)
    assert untrained < 1  # the saved context, not the template, made the scores


@pytest.mark.parametrize("kind", ["coop", "cocoop"])
@pytest.mark.parametrize("kept", [[0, 3, 4, 11], [5], list(range(12))])
def test_scoring_only_the_rows_a_view_needs_gives_those_rows_similarities(clip_model, tmp_path, kind, kept):
    """method_similarities(rows=...): the background grid's aligned and conflict rows alone give
    what scoring the whole split gives them, up to float rounding (a one-row batch takes
    another BLAS kernel; the embedded run's evaluate files came out byte-identical)."""
    from types import SimpleNamespace

    from dicap.evaluation.prompts import method_similarities
    from dicap.io import save_arrays

    learner = CoCoOp(clip_model, tokenize, NAMES, **INIT) if kind == "cocoop" else _learner(clip_model, "coop")
    prompt = tmp_path / "prompt.safetensors"
    save_arrays(prompt, {k: v.detach().numpy() for k, v in learner.trainable_state().items()})
    x, _ = _batch(12)
    features, store = {"grid": x.numpy()}, SimpleNamespace(classes=NAMES)
    bundle = SimpleNamespace(model=clip_model, tokenizer=tokenize, pixels_to_input=None)
    args = (bundle, store, features, kind, prompt, INIT, ["grid"], tmp_path / "out.csv")
    whole = method_similarities(*args)["grid"]
    some = method_similarities(*args, {"grid": np.asarray(kept)})["grid"]
    assert some.shape == (len(kept), len(NAMES))
    torch.testing.assert_close(some, whole[kept], rtol=1e-6, atol=1e-7)
