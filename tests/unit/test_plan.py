"""The study's plan (src/dicap/plan.py), checked without Snakemake: the grid a config asks for."""

from __future__ import annotations

import copy

import pytest

from dicap import layout
from dicap.plan import ABLATION_NAMES, PROMPT_ABLATIONS, Plan, split_key
from dicap.prompting.registry import LEARNERS


@pytest.fixture(scope="module")
def plan(config) -> Plan:
    return Plan(config)


def _with(config: dict, **changes) -> Plan:
    changed = copy.deepcopy(config)
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = changed
        for part in parents:
            node = node[part]
        node[key] = value
    return Plan(changed)


def test_every_ablation_is_planned_and_starts_from_main_where_it_shares_its_settings(plan):
    assert set(plan.ablations) == set(ABLATION_NAMES) and set(PROMPT_ABLATIONS) < set(ABLATION_NAMES)
    for name, variants in plan.ablations.items():
        assert len(variants) == len(set(variants)), name
        for variant in variants:
            layout.parse_variant(variant)  # every name reads back
    assert layout.MAIN in plan.ablations["guidance_scale"] and layout.MAIN in plan.ablations["loss"]
    assert plan.ablations["true_cf"] == [layout.MAIN, layout.TRUE_CF]


@pytest.mark.parametrize("scales", [[1.0], [2.0, 7.5], [3.0, 3.0, 12.0]])
def test_the_guidance_ablation_has_one_variant_per_distinct_scale(config, scales):
    planned = _with(config, ablations__guidance_scales=scales)
    distinct = {float(s) for s in [*scales, config["counterfactual"]["guidance_scale"]]}
    assert len(planned.ablations["guidance_scale"]) == len(distinct)


def test_methods_per_variant(plan, config):
    assert plan.variant_methods(layout.MAIN) == config["methods"]
    assert plan.variant_methods(layout.UNBIASED_SHOTS) == ["coop"]
    assert plan.variant_methods(layout.TRUE_CF) == plan.counterfactual_methods
    assert all(m.startswith("dicap") for m in plan.counterfactual_methods)
    assert plan.variant_methods(layout.context_variant(8)) == ["coop", "dicap"]
    assert plan.variant_methods(layout.loss_variant("cf_weight", 0.25, config["prompt"])) == ["dicap", "dicap_pos"]
    assert plan.variant_methods(layout.guidance_variant(9.0, config["counterfactual"])) == ["dicap"]


def test_what_a_variant_reuses(plan, config):
    ctx = layout.context_variant(8)
    assert plan.features_variant(ctx) == layout.MAIN and plan.counterfactual_variant(ctx) == layout.MAIN
    assert plan.counterfactual_variant(layout.TRUE_CF) == layout.MAIN  # main's files hold the true images too
    assert plan.counterfactual_variant(layout.UNBIASED_SHOTS) is None
    scale = layout.guidance_variant(9.0, config["counterfactual"])
    assert plan.features_variant(scale) == scale == plan.counterfactual_variant(scale)
    assert plan.training_params("coop", ctx)["n_ctx"] == 8 and plan.training_params("coop", ctx)["ctx_init"] is None


def test_splits_are_keyed_by_the_parameters_that_draw_them(plan, config):
    keys = {kind: split_key(p) for kind, p in plan.split_params.items()}
    assert len(set(keys.values())) == 3 and set(plan.split_params_by_key) == set(keys.values())
    assert plan.split_path("shapes", 1).endswith(f"seed1-{keys['shots']}.parquet")
    assert plan.split_path("shapes", 1, layout.UNBIASED_SHOTS).endswith(f"seed1-{keys['unbiased']}.parquet")
    assert split_key(_with(config, data__shots=2).split_params["shots"]) != keys["shots"]


def test_learner_resources_come_from_the_registry(config):
    paper = Plan({**config, "suite": "paper"})
    for name, spec in LEARNERS.items():
        assert paper.learner_memory_mb(name, 2000, 16000) == 16000 * spec.memory_factor
        assert paper.learner_memory_mb(f"dicap_{name}" if name != "coop" else "dicap", 2000, 16000, attempt=2) == 32000 * spec.memory_factor
        assert paper.learner_minutes(name) == spec.cluster_minutes
        assert paper.reads_pixels(name) == spec.uses_pixels
    embedded = Plan(config)
    assert {embedded.learner_memory_mb(n, 2000, 16000) for n in LEARNERS} == {2000}


def test_the_suites_targets(plan, config):
    assert plan.audit_results and plan.shortcut_results and len(plan.task_results) == 4
    assert set(plan.reproduction_inputs(reference_exists=False)) == {"table1", "backbones", "audit", "shortcut", "table2", "table3"}
    paper = Plan({**config, "suite": "paper", "datasets": ["dtd"], "tasks": {**config["tasks"], "datasets": {"vqa": ["vqav2"]}}})
    assert paper.audit_results == paper.shortcut_results == paper.controls == []
    assert paper.text_datasets == ["vqav2"] and paper.task_results == ["results/table3.csv", "results/table3.md"]
    assert "reference" in paper.reproduction_inputs(reference_exists=True)


def test_the_diffusion_check_is_planned_for_the_embedded_suite_only(plan, config):
    """The paper suite has no oracle: no check, so no counterfactual job waits for one."""
    checks = plan.diffusion_checks()
    assert checks == [plan.diffusion_checks(d)[0] for d in config["datasets"]]
    assert all(c.endswith(f"models/{d}/diffusion/check.json") for c, d in zip(checks, config["datasets"]))
    assert set(checks) <= set(plan.artifact_targets())  # DVC's artifacts stage owns build/<suite>/models whole
    assert "results/counterfactual_audit.md" in plan.audit_results
    paper = Plan({**config, "suite": "paper", "datasets": ["dtd"], "data": {**config["data"], "val_shots": 4}})
    assert paper.diffusion_checks() == paper.diffusion_checks("dtd") == []
    assert not [t for t in paper.artifact_targets() if t.endswith("check.json")]


def test_artifact_targets_cover_every_dataset_seed_and_shard(plan, config):
    targets = plan.artifact_targets()
    assert len(targets) == len(set(targets))
    shards = config["counterfactual"]["shards"]
    shard_files = [t for t in targets if "/shard" in t]
    assert len(shard_files) == 2 * shards * len(config["seeds"]) * len(config["datasets"])
    assert all("/main/" in t for t in targets if "/counterfactuals/" in t or "/features/" in t and "eval" not in t)
