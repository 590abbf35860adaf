"""Train the prompt context of one method on cached image features.

``zeroshot`` is the hand-written template "a photo of a {class}." - exactly CoOp's
initial context - so every method shares this code and differs only in its loss:

- ``coop``: cross-entropy on the shots;
- ``dicap``: plus ``cf_weight`` x the paper's counterfactual hard negative (the source
  class's prompt must prefer the factual image to its counterfactual);
- ``dicap_pos``: plus, also, ``cf_positive_weight`` x the cross-entropy of each
  counterfactual as a labelled example of its target class ``y_cf``.  Our reading, not the
  paper's text: the hard negative alone cannot remove a background shortcut, because the
  counterfactual shares the background and it cancels in the gradient.
Given a checkpoint path, training resumes from a matching checkpoint there and saves one
every ``checkpoint_every`` epochs (see :mod:`dicap.prompting.checkpoint`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from dicap.prompting.checkpoint import TrainingState, fingerprint, load_checkpoint, save_checkpoint
from dicap.prompting.learner import PromptLearner
from dicap.prompting.losses import classification_loss, counterfactual_contrastive_loss
from dicap.runtime import optimizer_step

METHODS = ("zeroshot", "coop", "dicap", "dicap_pos")
COUNTERFACTUAL_METHODS = ("dicap", "dicap_pos")  # the methods that train on counterfactuals

log = logging.getLogger(__name__)


def train_context(
    learner: PromptLearner,
    method: str,
    features: dict[str, torch.Tensor],
    params: dict[str, Any],
    logit_scale: float,
    seed: int,
    checkpoint: Path | None = None,
    checkpoint_every: int = 0,
) -> list[dict[str, float]]:
    """Optimise ``learner.ctx`` in place; returns per-epoch mean losses.

    With ``checkpoint`` set, a checkpoint there from this very run (same params, method, seed,
    initial context and features) is resumed, and one is saved after every
    ``checkpoint_every``-th epoch (0: none).  Deleting it once the result is saved is the
    caller's job.  Resumed or not, the context and history come out bit for bit the same.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0 epochs, got {checkpoint_every}")
    if method == "zeroshot":
        return []
    generator = torch.Generator().manual_seed(seed)
    x, y = features["train"], features["train_labels"].long()
    x_cf, y_cf = features.get("cf"), features.get("cf_labels")
    uses_cf = method in COUNTERFACTUAL_METHODS
    if uses_cf and (x_cf is None or len(x_cf) != len(x)):
        raise ValueError(f"{method} needs one counterfactual feature per training image ('cf' in the feature cache)")
    epochs, batch = params["epochs"], params["batch_size"]
    steps_per_epoch = math.ceil(len(x) / batch)
    opt = torch.optim.SGD([learner.ctx], lr=params["lr"], momentum=0.9, weight_decay=params["weight_decay"])
    total = epochs * steps_per_epoch
    history: list[dict[str, float]] = []
    first_epoch, steps_done, key = 0, 0, ""
    if checkpoint is not None:
        key = fingerprint(method, seed, params, logit_scale, learner.ctx, features)
        saved = load_checkpoint(checkpoint, key)
        if saved is not None:
            saved.restore(learner.ctx, opt, generator)
            first_epoch, steps_done, history = saved.epoch, saved.scheduler_steps, saved.history
            log.info("resuming %s from epoch %d of %d (%s)", method, first_epoch, epochs, checkpoint)
    # The schedule is indexed by the global step: a resumed run continues the same cosine.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * (i + steps_done) / max(1, total)))
    )
    epoch_bar = tqdm(range(first_epoch, epochs), desc=f"{method} prompt", mininterval=5, initial=first_epoch, total=epochs)
    for epoch in epoch_bar:
        order = torch.randperm(len(x), generator=generator)
        sums = {"ce": 0.0, "cf": 0.0, "cf_pos": 0.0}
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            text_f = learner()
            loss = classification_loss(x[idx], text_f, y[idx], logit_scale)
            sums["ce"] += loss.item()
            if uses_cf:
                cf = counterfactual_contrastive_loss(x[idx], x_cf[idx], text_f, y[idx], params["cf_temperature"])
                loss = loss + params["cf_weight"] * cf
                sums["cf"] += cf.item()
            if method == "dicap_pos":
                cf_pos = classification_loss(x_cf[idx], text_f, y_cf[idx].long(), logit_scale)
                loss = loss + params["cf_positive_weight"] * cf_pos
                sums["cf_pos"] += cf_pos.item()
            optimizer_step(opt, loss, sched)
        history.append({"epoch": epoch + 1, **{k: v / steps_per_epoch for k, v in sums.items()}})
        if checkpoint is not None and checkpoint_every and (epoch + 1) % checkpoint_every == 0:
            state = TrainingState.capture(epoch + 1, learner.ctx, opt, steps_done + sched.last_epoch, generator, history)
            save_checkpoint(checkpoint, state, key)
            log.debug("checkpoint of %s at epoch %d of %d: %s", method, epoch + 1, epochs, checkpoint)
    return history
