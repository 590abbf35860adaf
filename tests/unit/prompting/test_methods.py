"""Method names and learners (prompting/methods.py): names parse to a learner and DiCap's term in
one of its three readings, every learner trains alone and with each, and the text tasks take only
one-prompt-per-text learners and the hard negative."""

from __future__ import annotations

import pytest
import torch

from dicap.config import ConfigError, validate_config, with_defaults
from dicap.prompting.losses import classification_loss, counterfactual_contrastive_loss
from dicap.prompting.methods import (
    LEARNERS,
    METHODS,
    PIXEL_LEARNERS,
    READINGS,
    build_learner,
    check_text_task_method,
    method_params,
    parse_method,
    reading_name,
)
from dicap.prompting.trainer import batch_losses, train_context
from helpers import NAMES, PARAMS, prompt_features, tokenize

pytestmark = pytest.mark.usefixtures("single_thread")

INIT = {"n_ctx": 4, "ctx_init": "a photo of a"}
# DiCap's three readings on each of the five learners: 15 method names.
READING_METHODS = [reading_name(r, learner) for r in READINGS for learner in LEARNERS]


# --- method names ---------------------------------------------------------------------------------


def test_method_names_parse_to_learner_and_dicap_term():
    assert parse_method("zeroshot").learner == "coop" and not parse_method("zeroshot").trains
    assert parse_method("dicap") == parse_method("dicap_coop").__class__("dicap", "coop", True, False)
    assert parse_method("dicap_pos").learner == "coop" and parse_method("dicap_pos").cf_positive
    for learner in LEARNERS:
        plain, dicap, pos = parse_method(learner), parse_method(f"dicap_{learner}"), parse_method(f"dicap_pos_{learner}")
        assert plain.learner == dicap.learner == pos.learner == learner
        assert not plain.uses_counterfactuals and dicap.uses_counterfactuals and not dicap.cf_positive and pos.cf_positive


@pytest.mark.parametrize("name", READING_METHODS)
def test_every_reading_on_every_learner_parses_to_its_flags(name):
    """dicap: the hard negative alone (the paper's); dicap_pos: both terms; dicap_label: the labelled
    counterfactual alone. Each reads counterfactual files, and the short name is CoOp's."""
    parsed = parse_method(name)
    reading = parsed.reading
    assert name in METHODS and name == reading_name(reading, parsed.learner)
    assert (parsed.hard_negative, parsed.cf_positive) == {"dicap": (True, False), "dicap_pos": (True, True),
                                                         "dicap_label": (False, True)}[reading]
    assert parsed.uses_counterfactuals and parsed.trains
    assert name.startswith(reading + "_") or (name == reading and parsed.learner == "coop")
    assert set(parsed.loss_keys) == ({"cf_weight", "cf_temperature"} if parsed.hard_negative else set()) | (
        {"cf_positive_weight"} if parsed.cf_positive else set())


def test_the_readings_and_learners_fill_the_method_list():
    assert parse_method("dicap_label") == parse_method("dicap_label_coop").__class__("dicap_label", "coop", False, True)
    assert sorted(METHODS) == sorted(["zeroshot", *LEARNERS, *READING_METHODS])
    assert all(parse_method(m).reading is None and not parse_method(m).loss_keys for m in ["zeroshot", *LEARNERS])


@pytest.mark.parametrize("name", ["", "dicap_", "dicap_pos_", "dicap_label_", "dicapcoop", "coop_dicap", "dicap_zeroshot",
                                  "DICAP", "maple2", "dicap_labelcoop", "dicap_label_zeroshot", "dicap_pos_label",
                                  "dicap_label_pos", "dicap_label_coop_x", "dicap_lbl"])
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


# --- every learner, with and without DiCap's term --------------------------------------------------


@pytest.mark.parametrize("learner", ["coop", "cocoop", "kgcoop", "cpl"])
def test_every_feature_learner_trains_alone_and_with_each_reading(clip_model, learner):
    feats, params = prompt_features(), {**PARAMS, "epochs": 3, "batch_size": 8, "kg_weight": 8.0, "cf_positive_weight": 1.0}
    results = {}
    methods = [learner, *(reading_name(r, learner) for r in READINGS)]
    for method in methods:
        parsed = parse_method(method)
        model = build_learner(method, clip_model, tokenize, NAMES, {**INIT, **params})
        start = {k: v.detach().clone() for k, v in model.trainable_state().items()}
        history = train_context(model, method, feats, params, 20.0, seed=0)
        assert history[-1]["ce"] < history[0]["ce"] or history[-1]["ce"] < 0.05
        assert ("cf" in history[0]) == parsed.hard_negative and ("cf_pos" in history[0]) == parsed.cf_positive
        moved = [k for k, v in model.trainable_state().items() if not torch.equal(v, start[k])]
        assert "ctx" in moved
        results[method] = torch.cat([v.detach().flatten() for v in model.trainable_state().values()])
    for i, a in enumerate(methods):  # the plug-in changes what is learned, and each reading differently
        for b in methods[i + 1 :]:
            assert not torch.equal(results[a], results[b]), (a, b)


def _reading_inputs(learner: str):
    """One batch for ``learner``: cached features, or (MaPLe) preprocessed images, with counterfactuals."""
    if learner not in PIXEL_LEARNERS:
        feats = prompt_features(n_per_class=2)
        return feats["train"], feats["train_labels"], feats["cf"], feats["cf_labels"]
    gen = torch.Generator().manual_seed(3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return torch.randn(6, 3, 16, 16, generator=gen), y, torch.randn(6, 3, 16, 16, generator=gen), (y + 1) % 3


@pytest.mark.parametrize("method", READING_METHODS)
def test_every_learner_scores_each_readings_counterfactuals_as_its_own_images(clip_model, method):
    """Each reading's terms on one batch, for all five learners: the hard negative on the source class's
    score of each pair, the labelled counterfactual as cross-entropy towards y_cf; both score the
    counterfactual as the learner scores any image (MaPLe through its prompted vision tower, CoCoOp
    and CPL with the counterfactual's own prompt): ``learner.similarities``.  The gradient reaches
    the context through the counterfactual terms alone."""
    parsed = parse_method(method)
    params = {**INIT, **({"n_ctx": 2, "ctx_init": None} if parsed.learner == "maple" else {}),
              **PARAMS, "cf_weight": 0.5, "cf_temperature": 0.5, "cf_positive_weight": 2.0}
    learner = build_learner(method, clip_model, tokenize, NAMES, params)
    x, y, x_cf, y_cf = _reading_inputs(parsed.learner)
    terms = batch_losses(learner, parsed, x, y, x_cf, y_cf, torch.arange(len(y)), params, 20.0)
    cf_terms = ({"cf"} if parsed.hard_negative else set()) | ({"cf_pos"} if parsed.cf_positive else set())
    assert {"cf", "cf_pos"} & set(terms) == cf_terms
    with torch.no_grad():
        sims, cf_sims = learner.similarities(x), learner.similarities(x_cf)
        rows = torch.arange(len(y))
        want = {"cf": (0.5, counterfactual_contrastive_loss(sims[rows, y], cf_sims[rows, y], 0.5)),
                "cf_pos": (2.0, classification_loss(cf_sims, y_cf, 20.0))}
    for name in cf_terms:
        assert terms[name][0] == want[name][0]
        torch.testing.assert_close(terms[name][1].detach(), want[name][1], rtol=1e-4, atol=1e-5)
    (grad,) = torch.autograd.grad(sum(w * v for n, (w, v) in terms.items() if n in cf_terms), learner.ctx)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["zeroshot", "coop", "kgcoop", "dicap", "dicap_kgcoop"])
def test_text_tasks_take_learners_with_one_prompt_per_text(method):
    assert check_text_task_method(method).name == method


@pytest.mark.parametrize("method", ["cocoop", "maple", "cpl", "dicap_pos", "dicap_cocoop", "dicap_maple", "dicap_pos_kgcoop",
                                    "dicap_label", "dicap_label_kgcoop", "dicap_label_cpl"])
def test_text_tasks_refuse_per_image_learners_and_the_positive_term(method):
    with pytest.raises(ValueError, match=f"method '{method}' cannot run a text task"):
        check_text_task_method(method)
    config = with_defaults({"tasks": {"methods": ["zeroshot", method]}})
    with pytest.raises(ConfigError, match="tasks.methods"):
        validate_config(config)


@pytest.mark.parametrize("method", ["maple", "dicap_maple", "dicap_label_maple", "coop", "dicap_pos_cocoop", "kgcoop", "cpl"])
def test_method_params_lay_the_cross_dataset_change_under_the_overrides(config, method):
    prompt, spec = config["prompt"], parse_method(method).spec
    base = method_params(prompt, method)
    assert method_params(prompt, method, cross_dataset=True) == base | spec.cross_dataset
    assert method_params(prompt, method, {"epochs": 7}, cross_dataset=True) == base | spec.cross_dataset | {"epochs": 7}
    assert method_params(prompt, method, cross_dataset=False) == base
