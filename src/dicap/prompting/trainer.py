"""Train the prompt context of one method on cached image features.

``zeroshot`` is the hand-written template "a photo of a {class}." - exactly CoOp's
initial context - so all three methods share this code and differ only in their loss.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tqdm import tqdm

from dicap.prompting.learner import PromptLearner
from dicap.prompting.losses import classification_loss, counterfactual_contrastive_loss
from dicap.runtime import optimizer_step

METHODS = ("zeroshot", "coop", "dicap")


def train_context(
    learner: PromptLearner,
    method: str,
    features: dict[str, torch.Tensor],
    params: dict[str, Any],
    logit_scale: float,
    seed: int,
) -> list[dict[str, float]]:
    """Optimise ``learner.ctx`` in place; returns per-epoch mean losses."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if method == "zeroshot":
        return []
    generator = torch.Generator().manual_seed(seed)
    x, y = features["train"], features["train_labels"].long()
    x_cf, y_cf = features.get("cf"), features.get("cf_labels")
    if method == "dicap" and (x_cf is None or len(x_cf) != len(x)):
        raise ValueError("dicap needs one counterfactual feature per training image ('cf' in the feature cache)")
    epochs, batch = params["epochs"], params["batch_size"]
    steps_per_epoch = math.ceil(len(x) / batch)
    opt = torch.optim.SGD([learner.ctx], lr=params["lr"], momentum=0.9, weight_decay=params["weight_decay"])
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / max(1, total))))
    history = []
    for epoch in tqdm(range(epochs), desc=f"{method} prompt", mininterval=5):
        order = torch.randperm(len(x), generator=generator)
        sums = {"ce": 0.0, "cf": 0.0}
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            text_f = learner()
            loss = classification_loss(x[idx], text_f, y[idx], logit_scale)
            sums["ce"] += loss.item()
            if method == "dicap":
                cf = counterfactual_contrastive_loss(x[idx], x_cf[idx], text_f, y[idx], params["cf_temperature"])
                if params["cf_positive_weight"] > 0:
                    cf = cf + params["cf_positive_weight"] * classification_loss(x_cf[idx], text_f, y_cf[idx].long(), logit_scale)
                loss = loss + params["cf_weight"] * cf
                sums["cf"] += cf.item()
            optimizer_step(opt, loss, sched)
        history.append({"epoch": epoch + 1, **{k: v / steps_per_epoch for k, v in sums.items()}})
    return history
