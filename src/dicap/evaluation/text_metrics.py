"""Scores of the text tasks: recall@K both ways for retrieval, VQA accuracy by question type.

Retrieval follows the usual image-text protocol (and CPL's headline number, image-to-text
R@1): an image's hit at K is any relevant text among its K most similar texts, a text's
hit any relevant image among its K most similar images.  VQA picks, per question, the most
similar of its candidate statements; the official VQA accuracy (min(#annotators who gave
the answer / 3, 1)) is scored by :mod:`dicap.data.vqa_scoring` against the ground-truth
answers, top-1 beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dicap.data.vqa_scoring import mean_vqa_accuracy, top1_accuracy


def recall_at(similarities: torch.Tensor, relevant: np.ndarray, ks: Sequence[int]) -> dict[int, np.ndarray]:
    """Per row of ``similarities`` (queries x items): hit (bool) at each K, relevance (queries x items)."""
    k_max = min(max(ks), similarities.shape[1])
    top = similarities.topk(k_max, dim=1).indices.numpy()
    hits = np.take_along_axis(relevant, top, axis=1)
    return {k: hits[:, :k].any(axis=1) for k in ks}


def retrieval_scores(similarities: torch.Tensor, relevant: np.ndarray, image_groups: dict[str, np.ndarray],
                     ks: Sequence[int]) -> dict[str, float]:
    """R@K in % both ways over all images and texts, and image-to-text R@K per group of images.

    ``similarities`` is (images x texts); ``image_groups`` names row masks (base, novel).
    """
    if not relevant.any(axis=1).all() or not relevant.any(axis=0).all():
        raise ValueError("every image needs a relevant text and every text a relevant image")
    i2t = recall_at(similarities, relevant, ks)
    t2i = recall_at(similarities.T.contiguous(), relevant.T, ks)
    scores = {f"i2t_r{k}": 100 * float(i2t[k].mean()) for k in ks} | {f"t2i_r{k}": 100 * float(t2i[k].mean()) for k in ks}
    for name, mask in image_groups.items():
        scores |= {f"{name}_i2t_r{k}": 100 * float(i2t[k][mask].mean()) for k in ks}
    return scores


def vqa_scores(similarities: torch.Tensor, candidates: np.ndarray, label: np.ndarray, kind: np.ndarray,
               answers: Sequence[str], groups: dict[str, np.ndarray], truth: Sequence[str] | None = None,
               human_answers: Sequence[Sequence[str]] | None = None) -> dict[str, float]:
    """VQA accuracy and top-1 in %, overall, per question type and per group of questions.

    ``similarities`` is (questions x texts), ``candidates`` (questions x texts) each
    question's statements, ``label`` its right statement (-1: the right answer is not among
    its candidates, so it cannot be answered right), ``answers`` the answer each statement
    gives (text index -> answer word).  ``truth`` and ``human_answers`` are each question's
    answer and its 10 human answers (VQAv2); without them the answer ``label`` states is the
    truth, given by all 10 annotators (the embedded suite's exact answers).
    """
    masked = similarities.masked_fill(~torch.from_numpy(candidates), float("-inf"))
    predicted = masked.argmax(1).numpy()
    guess = [answers[i] for i in predicted]
    truth = list(truth) if truth is not None else [answers[i] for i in label]
    human = human_answers if human_answers is not None else [[t] * 10 for t in truth]
    scores = {"vqa_accuracy": 100 * mean_vqa_accuracy(guess, human), "top1": 100 * top1_accuracy(guess, truth)}
    for name, mask in {**{str(k): kind == k for k in dict.fromkeys(kind)}, **groups}.items():
        scores[f"{name}_accuracy"] = 100 * float((predicted[mask] == label[mask]).mean())
    return scores
