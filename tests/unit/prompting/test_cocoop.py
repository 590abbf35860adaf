"""CoCoOp (prompting/cocoop.py): the meta-net's per-image bias, batched prompts, and the
similarities it trains on."""

from __future__ import annotations

import pytest
import torch

from dicap.prompting.cocoop import CoCoOp
from dicap.prompting.learner import cosine
from helpers import NAMES, prompt_features, tokenize

pytestmark = pytest.mark.usefixtures("single_thread")

INIT = {"n_ctx": 4, "ctx_init": "a photo of a"}


def test_cocoop_meta_net_bias_varies_with_the_image(clip_model):
    learner = CoCoOp(clip_model, tokenize, NAMES, **INIT)
    with torch.no_grad():
        learner.meta_net.linear2.bias.normal_(std=0.5)  # a trained-looking meta-net: zero-init output would hide nothing
        learner.meta_net.linear1.weight.normal_(std=1.0)
    images = prompt_features()["train"][[0, 8, 16]]
    bias = learner.meta_net(images)
    assert not torch.allclose(bias[0], bias[1]) and not torch.allclose(bias[1], bias[2])
    text = learner.class_features(images)
    assert text.shape == (3, len(NAMES), 32)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3, len(NAMES)))
    assert not torch.allclose(text[0], text[1], atol=1e-4)  # each image gets its own prompts
    # image 0's prompts are exactly CoOp's prompts around ctx + its bias
    shifted = learner.prompts(learner.ctx + bias[0])
    from dicap.prompting.learner import encode_text_embeddings

    torch.testing.assert_close(text[0], encode_text_embeddings(clip_model, shifted, learner.tokens), atol=1e-5, rtol=1e-5)


def test_cocoop_batched_prompts_equal_one_image_at_a_time(clip_model):
    learner = CoCoOp(clip_model, tokenize, NAMES, **INIT)
    images = prompt_features()["train"][:5]
    together = learner.class_features(images)
    for i in range(5):
        torch.testing.assert_close(together[i], learner.class_features(images[i : i + 1])[0], atol=1e-5, rtol=1e-5)


def test_a_learners_similarities_are_those_it_trains_on(clip_model):
    """The scorer's similarities equal the trainer's, for a conditional learner too."""
    learner = CoCoOp(clip_model, tokenize, NAMES, **INIT)
    images = prompt_features()["train"][:6]
    torch.testing.assert_close(learner.similarities(images), cosine(images, learner.class_features(images)))
