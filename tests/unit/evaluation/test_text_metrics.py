"""The text tasks' scores (evaluation/text_metrics.py): recall@k both ways, and VQA among each
question's candidates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dicap.evaluation.text_metrics import recall_at, retrieval_scores, vqa_scores


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.integers(1, 12), st.integers(0, 10_000))
def test_recall_grows_with_k_and_is_complete_at_every_item(n_queries, n_items, seed):
    rng = np.random.default_rng(seed)
    sims = torch.from_numpy(rng.normal(size=(n_queries, n_items)).astype(np.float32))
    relevant = rng.random((n_queries, n_items)) < 0.3
    relevant[np.arange(n_queries), rng.integers(0, n_items, n_queries)] = True
    hits = recall_at(sims, relevant, [1, 2, 5, n_items])
    assert (hits[1] <= hits[2]).all() and (hits[2] <= hits[5]).all() and hits[n_items].all()
    best = sims.argmax(1).numpy()
    assert (hits[1] == relevant[np.arange(n_queries), best]).all()


def test_retrieval_scores_both_ways():
    """Two images, three texts: image 0 matches texts 0 and 1, image 1 text 2."""
    relevant = np.array([[True, True, False], [False, False, True]])
    perfect = torch.tensor([[0.9, 0.8, 0.1], [0.1, 0.2, 0.9]])
    swapped = torch.tensor([[0.1, 0.2, 0.9], [0.9, 0.8, 0.1]])
    groups = {"base": np.array([True, False]), "novel": np.array([False, True])}
    assert retrieval_scores(perfect, relevant, groups, [1])["i2t_r1"] == 100 and retrieval_scores(perfect, relevant, groups, [1])["t2i_r1"] == 100
    worst = retrieval_scores(swapped, relevant, groups, [1, 2])
    assert worst["i2t_r1"] == 0 and worst["t2i_r1"] == 0 and worst["i2t_r2"] == 50 and worst["base_i2t_r2"] == 100 and worst["novel_i2t_r2"] == 0
    with pytest.raises(ValueError, match="relevant"):
        retrieval_scores(perfect, np.array([[True, True, False], [False, False, False]]), groups, [1])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000))
def test_vqa_picks_only_among_each_questions_candidates(seed):
    rng = np.random.default_rng(seed)
    n_q, n_t = 12, 9
    candidates = rng.random((n_q, n_t)) < 0.4
    candidates[np.arange(n_q), rng.integers(0, n_t, n_q)] = True
    label = np.array([rng.choice(np.flatnonzero(c)) for c in candidates])
    sims = torch.from_numpy(rng.normal(size=(n_q, n_t)).astype(np.float32))
    kind = np.array(["a", "b", "c"] * 4)
    answers = [f"answer {t}" for t in range(n_t)]
    scores = vqa_scores(sims, candidates, label, kind, answers, {"all": np.ones(n_q, bool)})
    masked = np.where(candidates, sims.numpy(), -np.inf).argmax(1)
    assert scores["top1"] == pytest.approx(100 * (masked == label).mean())
    assert scores["vqa_accuracy"] == pytest.approx(scores["top1"]) == pytest.approx(scores["all_accuracy"])
    assert np.mean([scores[f"{k}_accuracy"] for k in "abc"]) == pytest.approx(scores["top1"])
    oracle = torch.from_numpy(np.eye(n_t, dtype=np.float32)[label])
    assert vqa_scores(oracle, candidates, label, kind, answers, {})["top1"] == 100
