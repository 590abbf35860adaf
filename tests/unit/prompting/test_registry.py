"""One learner registry (src/dicap/prompting/registry.py): each class is bound to its entry."""

from __future__ import annotations

import pytest

from dicap.prompting.methods import LEARNERS as METHOD_LEARNERS
from dicap.prompting.methods import METHODS, TEXT_TASK_LEARNERS, check_text_task_method, parse_method
from dicap.prompting.registry import LEARNERS, learner_spec


@pytest.mark.parametrize("name", list(LEARNERS))
def test_each_learner_class_is_bound_to_its_entry(name):
    spec = LEARNERS[name]
    cls = spec.load()
    assert cls.spec is spec and cls.name == name
    assert (cls.uses_pixels, cls.conditional) == (spec.uses_pixels, spec.conditional)


def test_method_names_and_text_tasks_follow_the_registry():
    assert METHOD_LEARNERS == tuple(LEARNERS)
    assert set(TEXT_TASK_LEARNERS) == {n for n, s in LEARNERS.items() if s.text_tasks}
    for method in METHODS:
        parsed = parse_method(method)
        assert parsed.spec is LEARNERS[parsed.learner]
        if parsed.spec.text_tasks and not parsed.cf_positive:
            assert check_text_task_method(parsed) is parsed
        else:
            with pytest.raises(ValueError, match="cannot run a text task"):
                check_text_task_method(method)


def test_an_unknown_learner_is_named():
    with pytest.raises(ValueError, match="unknown learner 'clipper'"):
        learner_spec("clipper")


@pytest.mark.parametrize("name", list(LEARNERS))
def test_each_cross_dataset_recipe_is_a_valid_change_to_the_base_to_novel_one(config, name):
    """The cross-dataset change, laid over config's recipe, passes the schema (its keys are the
    learner's) and changes what it names: a key equal to the base-to-novel value is noise."""
    import copy

    from dicap.config import validate_config

    recipe = config["prompt"]["learners"][name]
    changed = copy.deepcopy(config)
    changed["prompt"]["learners"][name] = recipe | LEARNERS[name].cross_dataset
    validate_config(changed, "cross-dataset")
    base = config["prompt"] | recipe
    assert all(base.get(k) != v for k, v in LEARNERS[name].cross_dataset.items()), name


def test_the_cross_dataset_recipes_are_the_papers():
    """MaPLe's vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml; the others train their base-to-novel config."""
    assert {n: s.cross_dataset for n, s in LEARNERS.items() if s.cross_dataset} == {
        "maple": {"depth": 3, "epochs": 2, "lr": 0.0026}}
