"""KgCoOp (prompting/kgcoop.py): the penalty that keeps the context near the hand-written prompts."""

from __future__ import annotations

import pytest
import torch

from dicap.prompting.kgcoop import KgCoOp
from dicap.prompting.methods import build_learner
from dicap.prompting.trainer import train_context
from helpers import NAMES, PARAMS, prompt_features, tokenize

pytestmark = pytest.mark.usefixtures("single_thread")

INIT = {"n_ctx": 4, "ctx_init": "a photo of a"}


def test_kgcoop_penalty_is_zero_at_initialisation_and_grows_with_drift(clip_model):
    learner = KgCoOp(clip_model, tokenize, NAMES, **INIT, kg_weight=8.0, template="a photo of a {}.")
    feats = prompt_features()
    penalty0 = learner.own_losses(feats["train"], learner(), feats["train_labels"])["kg"]
    assert abs(penalty0.item()) < 1e-5
    with torch.no_grad():
        learner.ctx.add_(0.5 * torch.randn_like(learner.ctx))
    assert learner.own_losses(feats["train"], learner(), feats["train_labels"])["kg"].item() > 1e-3
    # the weight scales it, and another template is another anchor
    other = KgCoOp(clip_model, tokenize, NAMES, **INIT, kg_weight=8.0, template="a drawing of the {}.")
    assert other.knowledge_penalty(other()).item() > 1e-4


def test_kgcoop_stays_nearer_the_hand_written_prompts_than_coop(clip_model):
    feats, params = prompt_features(), {**PARAMS, "epochs": 10}
    kg = build_learner("kgcoop", clip_model, tokenize, NAMES, {**INIT, "kg_weight": 8.0})
    coop = build_learner("coop", clip_model, tokenize, NAMES, INIT)
    train_context(kg, "kgcoop", feats, params, 20.0, seed=0)
    train_context(coop, "coop", feats, params, 20.0, seed=0)
    with torch.no_grad():
        assert kg.knowledge_penalty(kg()) < kg.knowledge_penalty(coop())
