"""Train one method's prompt learner on cached image features (or images, for MaPLe).

Every method shares this loop and differs only in its learner and its loss
(:mod:`dicap.prompting.methods`):

- cross-entropy of the shots over the base classes' prompts, for every learner;
- the learner's own terms (KgCoOp's penalty, CPL's feature-space counterfactual);
- with DiCap's hard negative (``dicap``, ``dicap_pos``), ``cf_weight`` x the paper's
  counterfactual term: the source class's prompt must prefer the factual image to its
  counterfactual;
- with the counterfactual as a labelled example (``dicap_pos``, ``dicap_label``),
  ``cf_positive_weight`` x the cross-entropy of each counterfactual as an example of its
  target class ``y_cf``.  Our readings, not the paper's text: the hard negative alone cannot
  remove a background shortcut, because the counterfactual shares the background and it
  cancels in the gradient (docs/method.md).  ``dicap_label`` has this term alone.

The optimiser is SGD with momentum 0.9 and a cosine schedule, as in CoOp, CoCoOp, KgCoOp,
CPL and MaPLe.  Given a checkpoint path, training resumes from a matching checkpoint there
and saves one every ``checkpoint_every`` epochs (see :mod:`dicap.prompting.checkpoint`).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from dicap.prompting.checkpoint import TrainingState, fingerprint, load_checkpoint, save_checkpoint
from dicap.prompting.learner import PromptLearner, cosine
from dicap.prompting.losses import classification_loss, counterfactual_contrastive_loss
from dicap.prompting.methods import Method, as_method
from dicap.runtime import optimizer_step

log = logging.getLogger(__name__)


def train_context(
    learner: PromptLearner,
    method: str | Method,
    features: dict[str, torch.Tensor],
    params: dict[str, Any],
    logit_scale: float,
    seed: int,
    checkpoint: Path | None = None,
    checkpoint_every: int = 0,
) -> list[dict[str, float]]:
    """Optimise the learner's trainable tensors in place; returns per-epoch mean losses.

    ``features`` holds ``train`` (cached features, or uint8 images for a pixel learner) and
    ``train_labels``, and for DiCap's term ``cf`` and ``cf_labels``, one per training image.
    A text task (VQA) adds ``train_candidates``, (examples x texts) bool: each example's
    cross-entropy runs over its own candidates only, and a learner that ``supports_subset``
    encodes only the batch's candidate texts at each step (see :func:`batch_losses`).
    An optional ``cf_valid``, one bool per training example, marks the examples that have a
    counterfactual (a caption naming no object has none): DiCap's hard negative then averages
    over a batch's valid examples only, and is 0 in a batch without one.  Their ``cf`` rows
    are placeholders, never read.  It cannot go with a reading whose counterfactual is a
    labelled example (``dicap_pos``, ``dicap_label``: ValueError).
    With ``checkpoint`` set, a checkpoint there from this very run (same params, method, seed,
    initial tensors and features) is resumed, and one is saved after every
    ``checkpoint_every``-th epoch (0: none).  Deleting it once the result is saved is the
    caller's job.  Resumed or not, the result and history come out bit for bit the same.
    """
    spec = as_method(method)
    method = spec.name
    if spec.learner != learner.name:
        raise ValueError(f"{method} trains a {spec.learner} learner, not {learner.name}")
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0 epochs, got {checkpoint_every}")
    if not spec.trains:
        return []
    generator = torch.Generator().manual_seed(seed)
    x, y = features["train"], features["train_labels"].long()
    x_cf, y_cf = features.get("cf"), features.get("cf_labels")
    candidates = features.get("train_candidates")
    if spec.uses_counterfactuals and (x_cf is None or len(x_cf) != len(x)):
        raise ValueError(f"{method} needs one counterfactual per training image ('cf' in the feature cache)")
    if spec.cf_positive and (y_cf is None or len(y_cf) != len(x)):
        raise ValueError(f"{method} needs each counterfactual's target class ('cf_labels' in the feature cache)")
    cf_valid = features.get("cf_valid")
    if cf_valid is not None:
        cf_valid = check_cf_valid(cf_valid, spec, len(x))
    learner.prepare(x, y)
    state = learner.trainable_state()
    epochs, batch = params["epochs"], params["batch_size"]
    steps_per_epoch = math.ceil(len(x) / batch)
    opt = torch.optim.SGD(list(state.values()), lr=params["lr"], momentum=0.9, weight_decay=params["weight_decay"])
    total = epochs * steps_per_epoch
    history: list[dict[str, float]] = []
    first_epoch, steps_done, key = 0, 0, ""
    if checkpoint is not None:
        key = fingerprint(method, seed, params, logit_scale, state, features)
        saved = load_checkpoint(checkpoint, key)
        if saved is not None:
            saved.restore(state, opt, generator)
            first_epoch, steps_done, history = saved.epoch, saved.scheduler_steps, saved.history
            log.info("resuming %s from epoch %d of %d (%s)", method, first_epoch, epochs, checkpoint)
    # The schedule is indexed by the global step: a resumed run continues the same cosine.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * (i + steps_done) / max(1, total)))
    )
    learner.train()
    started = time.monotonic()
    for epoch in range(first_epoch, epochs):
        order = torch.randperm(len(x), generator=generator)
        sums: dict[str, float] = {"ce": 0.0}
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            terms = batch_losses(learner, spec, x[idx], y[idx], x_cf, y_cf, idx, params, logit_scale,
                                 None if candidates is None else candidates[idx].bool(),
                                 None if cf_valid is None else cf_valid[idx])
            for name, (_, value) in terms.items():
                sums[name] = sums.get(name, 0.0) + value.item()
            optimizer_step(opt, sum(weight * value for weight, value in terms.values()), sched)
        history.append({"epoch": epoch + 1, **{k: v / steps_per_epoch for k, v in sums.items()}})
        log.info("%s", epoch_line(method, history[-1], epochs, time.monotonic() - started))
        if checkpoint is not None and checkpoint_every and (epoch + 1) % checkpoint_every == 0:
            saved_state = TrainingState.capture(epoch + 1, state, opt, steps_done + sched.last_epoch, generator, history)
            save_checkpoint(checkpoint, saved_state, key)
            log.debug("checkpoint of %s at epoch %d of %d: %s", method, epoch + 1, epochs, checkpoint)
    learner.eval()
    return history


def epoch_line(method: str, losses: dict[str, float], epochs: int, seconds: float) -> str:
    """One epoch's progress line, e.g. ``coop epoch 3/50: ce 1.2346 kg 0.0021 (4 s)``: its mean
    loss terms as the history records them, and the time since training (or resuming) began."""
    terms = " ".join(f"{name} {value:.4f}" for name, value in losses.items() if name != "epoch")
    return f"{method} epoch {losses['epoch']}/{epochs}: {terms} ({seconds:.0f} s)"


def check_cf_valid(cf_valid: torch.Tensor, spec, n: int) -> torch.Tensor:
    """``cf_valid`` as a (n,) bool tensor, or ValueError: a wrong shape, non-0/1 values, or
    a reading whose counterfactual is a labelled example (``dicap_pos``, ``dicap_label``): that
    term has no rule for an image without a counterfactual."""
    if spec.cf_positive:
        raise ValueError(f"{spec.name} cannot take 'cf_valid': its counterfactual-as-example term "
                         "(dicap_pos, dicap_label) needs a counterfactual for every image; use dicap[_<learner>]")
    if tuple(cf_valid.shape) != (n,):
        raise ValueError(f"'cf_valid' must hold one flag per training example, ({n},), got {tuple(cf_valid.shape)}")
    if cf_valid.dtype != torch.bool:
        if cf_valid.is_floating_point() or cf_valid.is_complex() or not ((cf_valid == 0) | (cf_valid == 1)).all():
            raise ValueError(f"'cf_valid' must be bool (or 0/1 integers), got {cf_valid.dtype}")
        cf_valid = cf_valid.bool()
    return cf_valid


def batch_losses(learner: PromptLearner, spec, x: torch.Tensor, y: torch.Tensor, x_cf: torch.Tensor | None,
                 y_cf: torch.Tensor | None, idx: torch.Tensor, params: dict[str, Any],
                 logit_scale: float, candidates: torch.Tensor | None = None,
                 cf_valid: torch.Tensor | None = None) -> dict[str, tuple[float, torch.Tensor]]:
    """Every loss term of one batch by name, as (weight, value): the loss is the weighted sum,
    the history records the values (a learner's own terms come weighted already).

    ``candidates`` (batch x texts) limits each example's cross-entropy to its own texts.  A
    learner that ``supports_subset`` then encodes only the texts the batch needs (its
    examples' candidates and labels) rather than all of them: the cross-entropy and DiCap's
    term are the same, only cheaper; KgCoOp's penalty becomes its mean over those texts
    (see kgcoop.py).  Other learners, and ``dicap_pos`` and ``dicap_label`` (whose term scores
    every text), encode every text as before.
    ``cf_valid`` (batch,) bool keeps DiCap's hard negative to the examples that have a
    counterfactual (``None``: all of them)."""
    if cf_valid is not None and spec.cf_positive:
        check_cf_valid(cf_valid, spec, len(y))  # raises
    if candidates is None or not learner.supports_subset or spec.cf_positive:
        return _batch_terms(learner, spec, x, y, x_cf, y_cf, idx, params, logit_scale, candidates, cf_valid)
    if candidates.shape != (len(y), len(learner.tokens)):
        raise ValueError(f"candidates must be (batch, texts) = {(len(y), len(learner.tokens))}, got {tuple(candidates.shape)}")
    cols, y_cols = batch_texts(candidates, y)
    with learner.subset(cols):
        return _batch_terms(learner, spec, x, y_cols, x_cf, y_cf, idx, params, logit_scale, candidates[:, cols], cf_valid)


def batch_texts(candidates: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The texts a batch needs, ascending (every example's candidates, and its label even if
    not a candidate, so no label falls outside), and each label's position among them."""
    needed = candidates.any(0)
    needed[y] = True
    position = needed.long().cumsum(0) - 1  # a needed text's index among the needed ones
    return needed.nonzero().squeeze(1), position[y]


def _batch_terms(learner: PromptLearner, spec, x: torch.Tensor, y: torch.Tensor, x_cf: torch.Tensor | None,
                 y_cf: torch.Tensor | None, idx: torch.Tensor, params: dict[str, Any],
                 logit_scale: float, candidates: torch.Tensor | None,
                 cf_valid: torch.Tensor | None) -> dict[str, tuple[float, torch.Tensor]]:
    """:func:`batch_losses` on the learner's texts as they stand (all, or the active subset)."""
    image_f = learner.image_features(x)
    text_f = learner.class_features(image_f)
    sims = cosine(image_f, text_f)
    own = learner.own_losses(image_f, text_f, y)
    competing = sims if candidates is None else sims.masked_fill(~candidates, float("-inf"))
    terms = {"ce": (1.0, classification_loss(competing, y, logit_scale)), **{k: (1.0, v) for k, v in own.items()}}
    if not spec.uses_counterfactuals:
        return terms
    # The examples with a counterfactual (all, without cf_valid): the others' cf rows are never read.
    rows = torch.arange(len(y), device=y.device) if cf_valid is None else cf_valid.nonzero().squeeze(1)
    if len(rows) == 0:  # only with cf_valid, so only the hard negative (check_cf_valid)
        terms["cf"] = (params["cf_weight"], sims.new_zeros(()))
        return terms
    # Every learner scores its counterfactuals as it scores its images: through its own image
    # encoder (MaPLe's prompted tower), and a conditional learner with each image's own prompt;
    # CoOp's prompt is the same for both.
    cf_f = learner.image_features(x_cf[idx[rows.to(idx.device)]])
    cf_sims = cosine(cf_f, learner.class_features(cf_f) if learner.conditional else text_f)
    if spec.hard_negative:
        pairs = torch.arange(len(rows), device=y.device)
        terms["cf"] = (params["cf_weight"], counterfactual_contrastive_loss(
            sims[rows, y[rows]], cf_sims[pairs, y[rows]], params["cf_temperature"]))
    if spec.cf_positive:  # never with cf_valid (check_cf_valid): rows are the whole batch
        terms["cf_pos"] = (params["cf_positive_weight"], classification_loss(cf_sims, y_cf[idx].long(), logit_scale))
    return terms
