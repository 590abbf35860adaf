"""Method names and learners (prompting/methods.py): names parse to a learner and DiCap's term,
every learner trains alone and with it, and the text tasks take only one-prompt-per-text learners."""

from __future__ import annotations

import pytest
import torch

from dicap.config import ConfigError, validate_config, with_defaults
from dicap.prompting.methods import (
    LEARNERS,
    METHODS,
    PIXEL_LEARNERS,
    build_learner,
    check_text_task_method,
    method_params,
    parse_method,
)
from dicap.prompting.trainer import train_context
from helpers import NAMES, PARAMS, prompt_features, tokenize

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


@pytest.mark.parametrize("method", ["zeroshot", "coop", "kgcoop", "dicap", "dicap_kgcoop"])
def test_text_tasks_take_learners_with_one_prompt_per_text(method):
    assert check_text_task_method(method).name == method


@pytest.mark.parametrize("method", ["cocoop", "maple", "cpl", "dicap_pos", "dicap_cocoop", "dicap_maple", "dicap_pos_kgcoop"])
def test_text_tasks_refuse_per_image_learners_and_the_positive_term(method):
    with pytest.raises(ValueError, match=f"method '{method}' cannot run a text task"):
        check_text_task_method(method)
    config = with_defaults({"tasks": {"methods": ["zeroshot", method]}})
    with pytest.raises(ConfigError, match="tasks.methods"):
        validate_config(config)
