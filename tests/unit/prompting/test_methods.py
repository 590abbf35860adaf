"""The learners beside CoOp (CoCoOp, KgCoOp, CPL; MaPLe in test_maple.py), method names, and
DiCap's term as a plug-in on any learner."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip")

from dicap.prompting.cocoop import CoCoOp  # noqa: E402
from dicap.prompting.cpl import CPL, greedy_edit  # noqa: E402
from dicap.prompting.kgcoop import KgCoOp  # noqa: E402
from dicap.prompting.learner import cosine  # noqa: E402
from dicap.prompting.methods import LEARNERS, METHODS, PIXEL_LEARNERS, build_learner, method_params, parse_method  # noqa: E402
from dicap.prompting.trainer import train_context  # noqa: E402
from helpers import NAMES, PARAMS, prompt_features, tokenize  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")
INIT = {"n_ctx": 4, "ctx_init": "a photo of a"}


# --- method names ---------------------------------------------------------------------------------


def test_method_names_parse_to_learner_and_dicap_term():
    assert parse_method("zeroshot").learner == "coop" and not parse_method("zeroshot").trains
    assert parse_method("dicap") == parse_method("dicap_coop").__class__("dicap", "coop", True, False)
    assert parse_method("dicap_pos").learner == "coop" and parse_method("dicap_pos").cf_positive
    for learner in LEARNERS:
        plain, dicap, pos = parse_method(learner), parse_method(f"dicap_{learner}"), parse_method(f"dicap_pos_{learner}")
        assert plain.learner == dicap.learner == pos.learner == learner
        assert not plain.uses_counterfactuals and dicap.uses_counterfactuals and not dicap.cf_positive and pos.cf_positive


@pytest.mark.parametrize("name", ["", "dicap_", "dicap_pos_", "dicapcoop", "coop_dicap", "dicap_zeroshot", "DICAP", "maple2"])
def test_bad_method_names_are_refused(name):
    with pytest.raises(ValueError, match="unknown method"):
        parse_method(name)


def test_every_listed_method_name_parses():
    for name in METHODS:
        parse_method(name)


def test_method_params_lay_the_recipe_and_the_variant_over_the_shared_keys(config):
    prompt = config["prompt"]
    coop = method_params(prompt, "dicap")
    assert "learners" not in coop and "checkpoint_every" not in coop and coop["epochs"] == prompt["epochs"]
    maple = method_params(prompt, "dicap_maple", {"cf_weight": 4.0})
    assert maple["n_ctx"] == prompt["learners"]["maple"]["n_ctx"] and maple["cf_weight"] == 4.0
    assert method_params(prompt, "cocoop")["batch_size"] == prompt["learners"]["cocoop"]["batch_size"]


def test_the_pixel_learners_are_the_ones_that_say_so(clip_model):
    for learner in LEARNERS:
        params = {**INIT, **({"n_ctx": 2, "ctx_init": None} if learner == "maple" else {})}
        built = build_learner(learner, clip_model, tokenize, NAMES, params)
        assert built.uses_pixels == (learner in PIXEL_LEARNERS) and built.name == learner


# --- CoCoOp ---------------------------------------------------------------------------------------


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


# --- KgCoOp ---------------------------------------------------------------------------------------


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


# --- CPL ------------------------------------------------------------------------------------------


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


# --- every learner, with and without DiCap's term --------------------------------------------------


@pytest.mark.parametrize("learner", ["coop", "cocoop", "kgcoop", "cpl"])
def test_every_feature_learner_trains_alone_and_with_dicap(clip_model, learner):
    feats, params = prompt_features(), {**PARAMS, "epochs": 3, "batch_size": 8, "kg_weight": 8.0, "cf_positive_weight": 1.0}
    results = {}
    for method in (learner, f"dicap_{learner}", f"dicap_pos_{learner}"):
        model = build_learner(method, clip_model, tokenize, NAMES, {**INIT, **params})
        start = {k: v.detach().clone() for k, v in model.trainable_state().items()}
        history = train_context(model, method, feats, params, 20.0, seed=0)
        assert history[-1]["ce"] < history[0]["ce"] or history[-1]["ce"] < 0.05
        assert ("cf" in history[0]) == method.startswith("dicap")
        moved = [k for k, v in model.trainable_state().items() if not torch.equal(v, start[k])]
        assert "ctx" in moved
        results[method] = torch.cat([v.detach().flatten() for v in model.trainable_state().values()])
    assert not torch.equal(results[learner], results[f"dicap_{learner}"])  # the plug-in changes what is learned
    assert not torch.equal(results[f"dicap_{learner}"], results[f"dicap_pos_{learner}"])


def test_a_learners_similarities_are_those_it_trains_on(clip_model):
    """The scorer's similarities equal the trainer's, for a conditional learner too."""
    learner = CoCoOp(clip_model, tokenize, NAMES, **INIT)
    images = prompt_features()["train"][:6]
    torch.testing.assert_close(learner.similarities(images), cosine(images, learner.class_features(images)))


def test_scoring_a_conditional_learner_in_chunks_gives_the_same_similarities(clip_model, monkeypatch):
    """Chunks sized by prompts per call (a thousand classes: a few images) change nothing but memory."""
    from dicap.evaluation import prompts

    learner = CoCoOp(clip_model, tokenize, NAMES, **INIT)
    images = prompt_features()["train"].numpy()
    whole = prompts.all_similarities(learner, len(images), lambda a, b: images[a:b])
    monkeypatch.setattr(prompts, "PROMPTS_PER_CALL", 2 * len(NAMES))  # two images per call
    calls = []
    chunked = prompts.all_similarities(learner, len(images), lambda a, b: calls.append(b - a) or images[a:b])
    assert max(calls) == 2 and sum(calls) == len(images)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
