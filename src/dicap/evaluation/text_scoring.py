"""Scoring learned contexts on a text task: every method's learner rebuilt over the task's
test texts, its image-text similarities, then retrieval or VQA scores per method."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dicap.data.text_tasks import TextExamples
from dicap.evaluation.prompts import all_similarities, load_prompt, model_device
from dicap.evaluation.text_metrics import retrieval_scores, vqa_scores
from dicap.guards import check_finite
from dicap.prompting.methods import build_learner


def score_text_task(bundle: Any, store: Any, features: np.ndarray, labels: np.ndarray, examples: TextExamples,
                    prompts: dict[str, Path], params: dict[str, dict[str, Any]], seed: int, recall_at: Sequence[int],
                    where: Path) -> pd.DataFrame:
    """One row per method: the task's scores on the test images ``features`` (their classes ``labels``).

    Images of base and novel classes are also scored apart (the paper's unseen-class claim):
    retrieval's image-to-text recall per half, VQA's accuracy on each half's questions.
    """
    # a paper retrieval or VQA dataset has no classes, so no halves
    halves = {"base": np.isin(labels, store.base_classes), "novel": np.isin(labels, store.novel_classes)} if store.classes else {}
    rows = []
    for method, prompt in prompts.items():
        learner = build_learner(method, bundle.model, bundle.tokenizer, examples.texts, params[method]).to(model_device(bundle))
        load_prompt(learner, prompt, where)
        learner.eval()
        sims = all_similarities(learner, len(features), lambda a, b: features[a:b])
        check_finite(where, {f"similarities of {method}": sims})
        if examples.relevant is not None:
            scores = retrieval_scores(sims, examples.relevant, halves, recall_at)
        else:
            per_question = {k: mask[examples.image] for k, mask in halves.items()}
            scores = vqa_scores(sims[torch.from_numpy(examples.image)], examples.candidates, examples.label,
                                examples.kind, examples.answers, per_question, examples.truth, examples.human_answers)
        rows.append({"method": method, "seed": seed, **scores})
    return pd.DataFrame(rows)
