"""Scoring learned prompts: each method's context turned into class text features, then
base-to-novel accuracy on every test split of one dataset and seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dicap.data.scm import paired_masks
from dicap.data.store import BACKGROUND_GRID
from dicap.evaluation.metrics import base_novel
from dicap.guards import check_finite
from dicap.io import load_arrays
from dicap.prompting.learner import PromptLearner


def load_context(learner: PromptLearner, prompt: Path, where: Path) -> None:
    """Put the context saved in ``prompt`` into ``learner``, refusing one of the wrong shape or NaN.

    ``where`` is the output the caller is about to write: errors name it and the prompt file.
    """
    ctx = load_arrays(prompt).get("ctx")
    if ctx is None or tuple(ctx.shape) != tuple(learner.ctx.shape):
        found = "no 'ctx' tensor" if ctx is None else f"ctx of shape {tuple(ctx.shape)}"
        raise ValueError(f"{prompt} holds {found}, expected {tuple(learner.ctx.shape)} (n_ctx x text width)")
    check_finite(where, {"ctx": ctx}, source=prompt)
    learner.ctx.data = torch.from_numpy(ctx)


def score_prompts(
    bundle: Any,
    class_names: list[str],
    base: list[int],
    novel: list[int],
    test_splits: list[str],
    features: dict[str, np.ndarray],
    prompts: dict[str, Path],
    params: dict[str, Any],
    seed: int,
    where: Path,
    pairing: list[int] | None = None,
) -> pd.DataFrame:
    """One row per method and test split: base, novel and HM accuracy (and each half's worst class).

    ``bundle`` is a frozen :class:`~dicap.backbones.clip.ClipBundle`, ``features`` the cached
    evaluation features, ``prompts`` each method's learned context file.  The background
    grid is scored as two splits, ``test_aligned`` and ``test_conflict``: its rows on each
    class's own ``pairing`` colour and on another class's of the same half.
    """
    feats = {k: torch.from_numpy(v) for k, v in features.items()}
    views = {}
    for split in test_splits:
        if split == BACKGROUND_GRID:
            if pairing is None:
                raise ValueError(f"scoring {split} needs the seed's class-background pairing")
            labels = feats[f"{split}_labels"]
            masks = paired_masks(labels.numpy(), features[f"{split}_bg"], pairing, [base, novel])
            for name, mask in zip(("test_aligned", "test_conflict"), masks):
                views[name] = (feats[split][torch.from_numpy(mask)], labels[torch.from_numpy(mask)])
        else:
            views[split] = (feats[split], feats[f"{split}_labels"])
    rows = []
    for method, prompt in prompts.items():
        learner = PromptLearner(bundle.model, bundle.tokenizer, class_names, params["n_ctx"], params["ctx_init"])
        load_context(learner, prompt, where)
        with torch.no_grad():
            text = learner()
        check_finite(where, {f"class text features of {method}": text})
        for split, (image_f, labels) in views.items():
            scores = base_novel(image_f, labels, text, base, novel)
            rows.append({"method": method, "seed": seed, "split": split, **scores})
    return pd.DataFrame(rows)
