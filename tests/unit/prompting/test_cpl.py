"""CPL (prompting/cpl.py): the mask between an image and its negative, and the greedy edit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dicap.prompting.cpl import CPL, greedy_edit
from helpers import NAMES, prompt_features, tokenize

pytestmark = pytest.mark.usefixtures("single_thread")

INIT = {"n_ctx": 4, "ctx_init": "a photo of a"}


def test_cpl_mask_interpolates_between_the_image_and_its_negative(clip_model):
    learner = CPL(clip_model, tokenize, NAMES, **INIT)
    feats = prompt_features()
    learner.prepare(feats["train"], feats["train_labels"])
    labels = feats["train_labels"][:4].long()
    image = feats["train"][:4]
    negative = learner.negative_features[labels]
    with torch.no_grad():
        learner.u_star.fill_(-1.0)  # mask 0: the factual image itself
        torch.testing.assert_close(learner.counterfactual(image, labels), image)
        learner.u_star.fill_(1.0)  # mask 1: the negative image
        torch.testing.assert_close(learner.counterfactual(image, labels), F.normalize(negative, dim=-1))
        learner.u_star.fill_(-1.0)
        learner.u_star[:16] = 1.0  # half the dimensions: each from its own side
        cf = learner.counterfactual(image, labels)
        mixed = torch.cat([negative[:, :16], image[:, 16:]], dim=1)
        torch.testing.assert_close(cf, F.normalize(mixed, dim=-1))


def test_cpl_negative_class_is_another_class_and_its_image_is_of_that_class(clip_model):
    learner = CPL(clip_model, tokenize, NAMES, **INIT)
    feats = prompt_features()
    learner.prepare(feats["train"], feats["train_labels"])
    for c, neg in enumerate(learner.negative_class.tolist()):
        assert neg != c
        first = int((feats["train_labels"] == neg).nonzero()[0])
        torch.testing.assert_close(learner.negative_features[c], feats["train"][first])
    assert ((learner.u_star == 1) | (learner.u_star == -1)).all() and (learner.u_star == 1).any()


def test_greedy_edit_stops_when_the_target_class_wins():
    gen = torch.Generator().manual_seed(0)
    t_src, t_tgt = F.normalize(torch.randn(2, 16, generator=gen), dim=-1)
    source, target = F.normalize(t_src + 0.1 * torch.randn(16, generator=gen), dim=0), t_tgt.clone()
    dims = greedy_edit(source, target, t_src, t_tgt)
    assert len(set(dims)) == len(dims) and 0 < len(dims) < 16
    edited = source.clone()
    edited[dims] = target[dims]
    edited = F.normalize(edited, dim=0)
    assert edited @ t_tgt > edited @ t_src
    before = source.clone()
    before[dims[:-1]] = target[dims[:-1]]
    before = F.normalize(before, dim=0)
    assert before @ t_tgt <= before @ t_src  # one swap fewer and the source class still wins
