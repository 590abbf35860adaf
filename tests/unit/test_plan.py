"""The study's plan (src/dicap/plan.py), checked without Snakemake: the grid a config asks for."""

from __future__ import annotations

import copy
import math

import pytest

from dicap import budget, layout
from dicap.config import load_config, validate_config
from dicap.plan import (
    GENERATOR_CURVE, ABLATION_NAMES, ABLATION_READINGS, PROMPT_ABLATION_KEYS, PROMPT_ABLATIONS, TRAINER_KEYS, Plan, split_key,
)
from dicap.prompting.methods import READINGS, parse_method, reading_name
from dicap.prompting.registry import LEARNERS
from helpers import REPO

# DiCap's three readings on each of the five learners: 15 method names.
READING_METHODS = [reading_name(r, learner) for r in READINGS for learner in LEARNERS]


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
    assert plan.variant_methods(layout.context_variant(8)) == ["coop", "dicap", "dicap_pos", "dicap_label"]
    assert plan.variant_methods(layout.guidance_variant(9.0, config["counterfactual"])) == ["dicap", "dicap_pos", "dicap_label"]
    assert plan.variant_methods(layout.sampling_variant("random", config["counterfactual"])) == list(ABLATION_READINGS)


@pytest.mark.parametrize(("key", "value", "methods"), [
    ("cf_weight", 0.25, ["dicap", "dicap_pos"]), ("cf_weight", 4, ["dicap", "dicap_pos"]),
    ("cf_temperature", 0.5, ["dicap", "dicap_pos"]),
    ("cf_positive_weight", 0.25, ["dicap_pos", "dicap_label"]), ("cf_positive_weight", 4, ["dicap_pos", "dicap_label"]),
])
def test_a_loss_setting_trains_the_readings_whose_loss_reads_it(plan, config, key, value, methods):
    """dicap_label has no hard negative (its result cannot depend on cf_weight), dicap no labelled counterfactual."""
    variant = layout.loss_variant(key, value, config["prompt"])
    assert variant in plan.ablations["loss"] and plan.variant_methods(variant) == methods
    assert all(plan.training_params(m, variant)[key] == value for m in methods)
    assert plan.counterfactual_variant(variant) == plan.features_variant(variant) == layout.MAIN


def test_the_loss_ablation_sweeps_every_readings_keys(plan, config):
    swept = {k for v in plan.ablations["loss"] for k in layout.parse_variant(v).prompt_overrides}
    assert swept == set(PROMPT_ABLATION_KEYS["loss"]) == {k for r in READINGS for k in parse_method(r).loss_keys}
    trained = {m for v in plan.ablations["loss"] if v != layout.MAIN for m in plan.variant_methods(v)}
    assert trained == set(READINGS)
    # config's own values are main's point, never a variant of their own
    assert not any(layout.parse_variant(v).prompt_overrides.get(k) == config["prompt"][k]
                   for v in plan.ablations["loss"] for k in PROMPT_ABLATION_KEYS["loss"])


@pytest.mark.parametrize("ablation", PROMPT_ABLATIONS)
def test_prompt_ablation_settings_give_main_every_method_the_ablation_trains(plan, ablation):
    """The report holds a sweep's other keys at main's values, so main lists every method the
    ablation trains (dicap_label too, which config's methods lack), at its config settings."""
    settings = plan.prompt_ablation_settings(ablation)
    for variant in plan.ablations[ablation]:
        if variant != layout.MAIN:
            assert list(settings[variant]) == plan.variant_methods(variant)
    main = settings[layout.MAIN]
    assert list(main)[: len(plan.methods)] == plan.methods
    assert set(main) == set(plan.methods) | {m for methods in settings.values() for m in methods} and set(READINGS) <= set(main)
    for method, values in main.items():
        assert values == {k: plan.training_params(method)[k] for k in PROMPT_ABLATION_KEYS[ablation]}


def test_every_ablation_variant_trains_readings_on_its_own_counterfactuals(plan):
    """Outside main, every method but CoOp is one of DiCap's readings, and it reads the variant's
    counterfactual files: its own, or main's for true_cf and the prompt variants."""
    for name, variants in plan.ablations.items():
        for variant in variants:
            if variant == layout.MAIN:
                continue
            assert all(m == "coop" or parse_method(m).uses_counterfactuals for m in plan.variant_methods(variant)), variant
            assert plan.counterfactual_variant(variant) in (layout.MAIN, variant)


@pytest.mark.parametrize("method", READING_METHODS)
def test_every_reading_on_every_learner_is_planned_like_the_others(config, method):
    """All 15 names: parsed, given their learner's recipe and the loss keys, read counterfactual files
    (main's for true_cf), sized by their learner, and trained by the true_cf control when configured."""
    parsed = parse_method(method)
    assert parsed.uses_counterfactuals and parsed.reading in READINGS and parsed.learner in LEARNERS
    planned = _with(config, methods=["zeroshot", "coop", method])
    validate_config(planned.config)
    params = planned.training_params(method)
    recipe = config["prompt"]["learners"][parsed.learner]
    assert all(params[k] == v for k, v in recipe.items())
    assert all(k in params for k in ("cf_weight", "cf_temperature", "cf_positive_weight"))
    assert planned.counterfactual_methods == [method]
    assert planned.variant_methods(layout.TRUE_CF) == [method] and planned.variant_methods(layout.MAIN)[-1] == method
    assert planned.counterfactual_variant(layout.TRUE_CF) == layout.MAIN
    assert planned.counterfactual_variant(layout.MAIN) == layout.MAIN
    assert planned.reads_pixels(method) == LEARNERS[parsed.learner].uses_pixels
    paper = Plan({**planned.config, "suite": "paper"})
    assert paper.learner_memory_mb(method, 2000, 16000) == 16000 * LEARNERS[parsed.learner].memory_factor
    assert paper.learner_minutes(method) == LEARNERS[parsed.learner].cluster_minutes


def test_the_controls_run_every_configured_reading(config):
    methods = ["zeroshot", "coop", "dicap", "dicap_pos", "dicap_label", "dicap_label_maple", "cocoop"]
    planned = _with(config, methods=methods)
    assert planned.variant_methods(layout.TRUE_CF) == ["dicap", "dicap_pos", "dicap_label", "dicap_label_maple"]
    assert planned.variant_methods(layout.UNBIASED_SHOTS) == ["coop"]
    metrics = planned.shortcut_metrics()
    assert any(f"/{layout.TRUE_CF}/" in m for m in metrics) and any(f"/{layout.UNBIASED_SHOTS}/" in m for m in metrics)


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
    assert len(set(keys.values())) == len(keys) == 4 and set(plan.split_params_by_key) == set(keys.values())
    assert plan.split_path("shapes", 1).endswith(f"seed1-{keys['shots']}.parquet")
    assert plan.split_path("shapes", 1, layout.UNBIASED_SHOTS).endswith(f"seed1-{keys['unbiased']}.parquet")
    assert plan.split_path("shapes", 1, layout.ALL_CLASSES).endswith(f"seed1-{keys['all']}.parquet")
    assert split_key(_with(config, data__shots=2).split_params["shots"]) != keys["shots"]


@pytest.mark.parametrize("key, value", [("shots", 2), ("shots", 8), ("spurious_strength", 0.5), ("spurious_strength", 1.0)])
def test_a_key_of_the_few_shot_draw_redraws_the_splits_and_never_renders(plan, config, key, value):
    """prepare_dataset's params are the renderer's keys only, so Snakemake reruns make_split and
    what follows, never the renders and so never the backbones, which read only the renders."""
    changed = _with(config, **{f"data__{key}": value})
    for dataset in ("shapes", "digits"):
        assert changed.data_params(dataset) == plan.data_params(dataset)
        assert key not in plan.data_params(dataset)
    assert changed.split_keys["shots"] != plan.split_keys["shots"]


@pytest.mark.parametrize("key, value", [("spurious_factor", "scale"), ("image_size", 8), ("render_seed", 3)])
def test_a_key_of_the_renderer_re_renders(plan, config, key, value):
    assert _with(config, **{f"data__{key}": value}).data_params("shapes") != plan.data_params("shapes")


def test_a_downloaded_dataset_is_prepared_with_its_root_and_image_size_only(config):
    data = {**config["data"], "root": "data/paper", "val_shots": 4}
    paper = Plan({**config, "suite": "paper", "datasets": ["dtd"], "data": data,
                  "tasks": {**config["tasks"], "datasets": {"vqa": ["vqav2"]}}})
    assert paper.data_params("dtd") == {"root": "data/paper", "image_size": data["image_size"]}
    assert paper.data_params("vqav2") == paper.data_params("dtd") | {"vqa_test_items": config["tasks"]["vqa_test_items"]}


@pytest.mark.parametrize("method", ["coop", "cocoop", "kgcoop", "dicap_cpl"])
def test_evaluation_builds_a_learner_without_the_trainers_keys(plan, config, method):
    """A trainer key (epochs, a DiCap loss weight) reruns training, and evaluation after it through
    its new prompt file, never through evaluate's own params."""
    learner = plan.learner_params(method)
    assert learner == {k: v for k, v in plan.training_params(method).items() if k not in TRAINER_KEYS}
    assert not set(TRAINER_KEYS) & set(learner) and {"n_ctx", "ctx_init"} <= set(learner)
    assert _with(config, prompt__epochs=3, prompt__cf_weight=0.1).learner_params(method) == learner
    assert _with(config, prompt__n_ctx=8).learner_params(method) != learner


def test_learner_resources_come_from_the_registry(config):
    paper = Plan({**config, "suite": "paper"})
    for name, spec in LEARNERS.items():
        assert paper.learner_memory_mb(name, 2000, 16000) == 16000 * spec.memory_factor
        assert paper.learner_memory_mb(f"dicap_{name}" if name != "coop" else "dicap", 2000, 16000, attempt=2) == 32000 * spec.memory_factor
        assert paper.learner_minutes(name) == spec.cluster_minutes
        assert paper.reads_pixels(name) == spec.uses_pixels
    embedded = Plan(config)
    assert {embedded.learner_memory_mb(n, 2000, 16000) for n in LEARNERS} == {2000}


@pytest.mark.parametrize("suite", ["embedded", "paper"])
def test_every_cluster_request_doubles_per_retry_from_its_first_attempt(config, paper, suite):
    """Walltimes and memory grow one way (budget.retried): attempt k asks 2**(k-1) times attempt 1's."""
    plan = Plan(config) if suite == "embedded" else paper
    for attempt in (2, 3):
        grow = 2 ** (attempt - 1)
        for d in [*plan.datasets, None]:
            for m in ("zeroshot", "coop", "dicap", "dicap_maple", "cocoop"):
                assert plan.learner_minutes(m, d, attempt) == grow * plan.learner_minutes(m, d)
                assert plan.learner_memory_mb(m, 2000, 16000, attempt) == grow * plan.learner_memory_mb(m, 2000, 16000)
            if d is not None:
                assert plan.shard_minutes(d, attempt) == grow * plan.shard_minutes(d)


def test_the_suites_targets(plan, config):
    assert plan.audit_results and plan.shortcut_results and len(plan.task_results) == 4
    assert plan.calibration_results == ["results/calibration.csv", "results/calibration.md"]
    assert set(plan.reproduction_inputs(reference_exists=False)) == {
        "table1", "backbones", "audit", "shortcut", "table2", "table3", "domain_generalization", "cross_dataset"}
    paper = Plan({**config, "suite": "paper", "datasets": ["dtd"], "tasks": {**config["tasks"], "datasets": {"vqa": ["vqav2"]}}})
    assert paper.audit_results == paper.shortcut_results == paper.calibration_results == paper.controls == []
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


def test_the_generator_curve_is_planned_for_the_embedded_suite_only_and_in_all(plan, config):
    curves = plan.generator_curves()
    assert curves == [plan.build(GENERATOR_CURVE, dataset=d) for d in config["datasets"]]
    assert all(c.endswith(f"audit/{d}/generator_curve.parquet") for c, d in zip(curves, config["datasets"]))
    assert "results/figures/generator_curve.png" in plan.audit_results  # `all` asks for the audit's results
    paper = Plan({**config, "suite": "paper", "datasets": ["dtd"], "data": {**config["data"], "val_shots": 4}})
    assert paper.generator_curves() == [] and "results/figures/generator_curve.png" not in paper.audit_results


@pytest.mark.parametrize("scale, depth, scales, depths", [
    (3.0, 0.8, [0, 1, 2, 3, 5, 10], [0.5, 0.6, 0.7, 0.8, 0.9]),  # the default already in the grid: nothing added
    (4.0, 0.75, [10, 0, 2], [0.9, 0.5]),  # added, and the lists sorted
    (0.0, 0.5, [0], [0.5]),
])
def test_the_generator_curve_always_measures_the_config_setting(config, scale, depth, scales, depths):
    settings = _with(config, counterfactual__guidance_scale=scale, counterfactual__inversion_depth=depth,
                     report__curve_guidance_scales=scales, report__curve_depths=depths).curve_settings
    assert settings["scales"] == sorted({float(s) for s in [*scales, scale]})
    assert settings["depths"] == sorted({float(d) for d in [*depths, depth]})
    assert scale in settings["scales"] and depth in settings["depths"]


def test_artifact_targets_cover_every_dataset_seed_and_shard(plan, config):
    targets = plan.artifact_targets()
    assert len(targets) == len(set(targets))
    shards, seeds, datasets = config["counterfactual"]["shards"], config["seeds"], config["datasets"]
    shard_files = [t for t in targets if "/shard" in t]
    figure_scales = len(plan.figure_variants) - 1  # the grids' other scales: the first seed's
    assert len(shard_files) == 2 * shards * len(datasets) * (len(seeds) + figure_scales)
    assert all(f"/seed{seeds[0]}/" in t for t in shard_files if "/main/" not in t)


@pytest.mark.parametrize("scales, controls", [([1, 10], ["digits"]), ([], []), ([3.0, 5], ["shapes", "digits"])])
def test_artifact_targets_hold_the_grids_scales_and_the_controls_features_and_no_ablation(config, scales, controls):
    """What `all` reads besides main's (issue 29.1): after a pull it plans no shard or feature job."""
    plan = _with(config, report__figure_guidance_scales=scales, controls=controls)
    targets = set(plan.artifact_targets())
    others = {layout.guidance_variant(s, config["counterfactual"]) for s in scales} - {layout.MAIN}
    grids = {t for t in targets if "/counterfactuals/" in t and "/main/" not in t}
    assert {t.split("/")[4] for t in grids} == others
    assert all(t.split("/")[5] == f"seed{config['seeds'][0]}" for t in grids)
    features = {t for t in targets if "/features/" in t and "/main/" not in t and "eval" not in t and "/targets/" not in t}
    assert features == {plan.build(layout.TRAIN_FEATURES, dataset=d, variant=v, seed=s)
                        for d in controls for v in (layout.TRUE_CF, layout.UNBIASED_SHOTS) for s in config["seeds"]}
    ablations = {v for name in ("guidance_scale", "sampling") for v in plan.ablations[name]} - others - {layout.MAIN}
    assert not [t for t in targets if any(f"/{v}/" in t for v in ablations)]


@pytest.mark.parametrize("methods", [["zeroshot"], ["coop", "kgcoop"], ["zeroshot", "cocoop", "maple", "cpl"]])
def test_a_study_without_counterfactual_methods_plans_no_counterfactuals(config, methods):
    """A baselines-only run must not train a diffusion model: no variant of it reads counterfactuals."""
    plan = _with(config, methods=methods, tasks={**config["tasks"], "methods": ["zeroshot", "coop"]})
    assert plan.counterfactual_variant(layout.MAIN) is None
    with_dicap = _with(config, methods=[*methods, "dicap_label"], tasks={**config["tasks"], "methods": ["coop"]})
    assert with_dicap.counterfactual_variant(layout.MAIN) == layout.MAIN
    text_only = _with(config, methods=methods, tasks={**config["tasks"], "methods": ["dicap"]})
    assert text_only.counterfactual_variant(layout.MAIN) == layout.MAIN  # the text tasks train on them


@pytest.fixture(scope="module")
def paper(config) -> Plan:
    """The paper suite's plan (config.paper.yaml over config.yaml)."""
    return Plan(load_config(REPO / "config.paper.yaml"))


@pytest.mark.parametrize("methods", [["coop"], ["zeroshot", "maple"], ["kgcoop", "cocoop", "cpl"]])
def test_a_paper_baseline_plans_no_counterfactuals_though_the_text_tasks_use_them(paper, methods):
    """On the paper suite the text tasks have datasets of their own: their DiCap methods make
    only those datasets' counterfactuals, never a classification dataset's (the smoke command)."""
    plan = _with(paper.config, methods=methods)
    assert "dicap" in plan.config["tasks"]["methods"] and plan.text_datasets
    for d in plan.datasets:
        assert plan.counterfactual_variant(layout.MAIN, d) is None
    assert all(plan.counterfactual_variant(layout.MAIN, d) == layout.MAIN for d in plan.text_datasets)
    with_dicap = _with(paper.config, methods=[*methods, "dicap"])
    assert all(with_dicap.counterfactual_variant(layout.MAIN, d) == layout.MAIN for d in with_dicap.datasets)


@pytest.mark.parametrize("per", [1, 100, 4000, 10**6])
def test_paper_shards_follow_the_image_count_and_the_embedded_suite_keeps_its_own(config, paper, per):
    plan = _with(paper.config, counterfactual__images_per_shard=per)
    for d in [*plan.datasets, *plan.text_datasets]:
        images = budget.counterfactuals_per_seed(d, plan.config)
        shards = plan.shards(d)
        assert shards == max(1, math.ceil(images / per)) and math.ceil(images / shards) <= per
    assert _with(paper.config, counterfactual__images_per_shard=None).shards("imagenet") == paper.config["counterfactual"]["shards"]
    embedded = _with(config, counterfactual__images_per_shard=per)
    assert all(embedded.shards(d) == config["counterfactual"]["shards"] for d in config["datasets"])
    assert plan.shards("my_birds") == paper.config["counterfactual"]["shards"]  # a dataset budget.yaml does not size


def test_zeroshot_asks_for_no_gpu_and_a_short_walltime(paper, config):
    assert paper.learner_gpus("zeroshot") == 0 and paper.learner_minutes("zeroshot", "imagenet") == budget.NO_TRAINING_MINUTES
    for method in ("coop", "dicap", "maple", "dicap_cocoop"):
        spec = parse_method(method).spec
        assert paper.learner_gpus(method) == 1
        minutes = [paper.learner_minutes(method, d) for d in ("eurosat", "imagenet")]
        assert budget.NO_TRAINING_MINUTES < minutes[0] <= minutes[1] <= spec.cluster_minutes
        assert paper.learner_minutes(method, "imagenet", attempt=2) == 2 * minutes[1]  # the retry doubles it
    assert Plan(config).learner_minutes("coop", "shapes") == 30


def test_shard_walltime_follows_its_budget(paper):
    minutes = {d: paper.shard_minutes(d) for d in paper.datasets}
    assert minutes["imagenet"] > minutes["eurosat"] >= budget.costs()["walltime"]["floor_minutes"]
    images = budget.counterfactuals_per_seed("imagenet", paper.config) / paper.shards("imagenet")
    assert minutes["imagenet"] * 60 >= images * budget.costs()["costs"]["counterfactual"]["seconds_per_image"]["compiled"]
    assert paper.shard_minutes("imagenet", attempt=2) == 2 * minutes["imagenet"]


def test_the_embedded_transfer_scores_each_datasets_prompts_and_the_positive_control_on_its_shifts(plan, config):
    runs = plan.transfer_runs("domain_generalization")
    assert runs == [(d, v, layout.SHIFTS) for d in config["datasets"]
                    for v in (layout.MAIN, *([layout.TRUE_CF] if d in config["controls"] else []))]
    files = plan.transfer_metrics("domain_generalization")
    assert len(files) == len(runs) * len(config["seeds"])
    assert all(layout.parse(layout.TRANSFER_METRICS, f)["target"] == layout.SHIFTS for f in files)
    assert plan.target_store("digits", layout.SHIFTS)[0].endswith("data/digits/shifts/factors.parquet")
    assert "results/domain_generalization.csv" not in _with(config, transfer__shifts=[]).transfer_results
    # artifacts: what `all` scores them on, so a pulled checkout renders and encodes nothing
    shifted = [*plan.target_store("digits", layout.SHIFTS), plan.build(layout.TARGET_FEATURES, dataset="digits", target=layout.SHIFTS)]
    assert set(shifted) <= set(plan.artifact_targets())
    assert not set(shifted) & set(_with(config, transfer__shifts=[]).transfer_artifacts())
    with pytest.raises(ValueError, match="unknown transfer table"):
        plan.transfer_runs("table9")


@pytest.mark.parametrize("pretrain_with", [{}, {"digits": ["shapes"]}, {"shapes": ["digits"]}, {"digits": ["shapes"], "shapes": ["digits"]}])
def test_the_embedded_cross_dataset_table_scores_each_clip_on_the_worlds_it_pretrained_on(config, pretrain_with):
    """clip.pretrain_with: a dataset's prompts (and the control's true-counterfactual ones) on its own
    unbiased split, then on each other world its CLIP read captions of; none without one."""
    plan = _with(config, clip__pretrain_with=pretrain_with)
    runs = plan.transfer_runs("cross_dataset")
    assert runs == [(d, v, t) for d in config["datasets"] if d in pretrain_with
                    for v in (layout.MAIN, *([layout.TRUE_CF] if d in config["controls"] else []))
                    for t in (d, *pretrain_with[d])]
    assert ("results/cross_dataset.csv" in plan.transfer_results) == bool(pretrain_with)
    for d in config["datasets"]:
        assert plan.pretrained_with(d) == pretrain_with.get(d, [])
        assert plan.clip_params(d).get("pretrain_with") == pretrain_with.get(d)  # only a CLIP that has company changes
        others = [{k: v for k, v in p.clip_params(d).items() if k != "pretrain_with"} for p in (plan, Plan(config))]
        assert others[0] == others[1]  # the rest of the block as before
    features = {plan.build(layout.TARGET_FEATURES, dataset=d, target=t) for d, _, t in runs}
    artifacts = plan.artifact_targets()
    assert features <= set(artifacts) and len(artifacts) == len(set(artifacts))
    assert Plan({**config, "suite": "paper", "datasets": ["dtd"]}).pretrained_with("digits") == []


@pytest.mark.parametrize("targets", [["imagenet_v2"], ["imagenet_sketch", "imagenet_a", "imagenet_r"]])
def test_the_paper_transfer_scores_the_all_class_prompts_of_the_source_on_each_target(config, targets):
    paper = Plan({**config, "suite": "paper", "datasets": ["imagenet", "dtd"],
                  "transfer": {**config["transfer"], "source": "imagenet", "domain_generalization": targets,
                               "cross_dataset": ["dtd"]}})
    assert paper.transfer_runs("domain_generalization") == [("imagenet", layout.ALL_CLASSES, t) for t in ["imagenet", *targets]]
    assert paper.transfer_runs("cross_dataset") == [("imagenet", layout.ALL_CLASSES, t) for t in ("imagenet", "dtd")]
    assert paper.target_store("imagenet", "dtd") == [paper.build(layout.DATA_TABLE, dataset="dtd"),
                                                     paper.build(layout.DATA_CLASSES, dataset="dtd")]
    assert len(paper.transfer_results) == 4 and {"domain_generalization", "cross_dataset"} <= set(
        paper.reproduction_inputs(reference_exists=False))


# --- all_classes: every class trains (the cross-dataset recipe) -------------------------------------

# The split keys of config.yaml and config.paper.yaml before all_classes existed: adding a split
# kind must not rename (and so redraw) a file the study already has.
SPLIT_KEYS = {"config.yaml": {"shots": "65afa4b67c", "unbiased": "aa0a3dcb7e", "text": "f4300e2f4f"},
              "config.paper.yaml": {"shots": "dfcad32ec4", "unbiased": "aa0a3dcb7e", "text": "f4300e2f4f"}}


@pytest.mark.parametrize("name", sorted(SPLIT_KEYS))
def test_the_existing_split_keys_are_unchanged_and_all_classes_has_its_own(name):
    plan = Plan(load_config(REPO / name))
    assert {k: v for k, v in plan.split_keys.items() if k != "all"} == SPLIT_KEYS[name]
    assert plan.split_keys["all"] not in SPLIT_KEYS[name].values()
    assert plan.split_params["all"] == plan.split_params["shots"] | {"classes": "all"}
    for variant in (layout.MAIN, layout.TRUE_CF, "ctx8", "guidance_scale10", "sample_random"):
        assert plan.split_kind(plan.datasets[0], variant) == "shots"
    assert plan.split_kind(plan.datasets[0], layout.ALL_CLASSES) == "all"
    for dataset in plan.text_datasets:  # a text dataset has no classes: its own share whatever the variant
        assert plan.split_kind(dataset, layout.ALL_CLASSES) == "text"


@pytest.mark.parametrize("methods", [["coop", "dicap"], ["zeroshot", "maple", "dicap_label_cocoop"], ["kgcoop", "cpl"]])
def test_all_classes_trains_the_configured_methods_on_its_own_counterfactuals(config, methods):
    plan = _with(config, methods=methods)
    assert plan.variant_methods(layout.ALL_CLASSES) == methods
    uses = any(parse_method(m).uses_counterfactuals for m in methods)
    assert plan.counterfactual_variant(layout.ALL_CLASSES) == (layout.ALL_CLASSES if uses else None)
    assert plan.features_variant(layout.ALL_CLASSES) == layout.ALL_CLASSES


def test_the_cross_dataset_recipe_is_applied_for_all_classes_only(plan, paper):
    """MaPLe's cross-dataset config (depth 3, 2 epochs, lr 0.0026) on every class; every other
    variant, and every other learner, keeps the base-to-novel recipe."""
    for planned in (plan, paper):
        variants = {v for vs in planned.ablations.values() for v in vs} | {layout.UNBIASED_SHOTS}
        for method in ["zeroshot", *LEARNERS, *READING_METHODS]:
            spec = LEARNERS[parse_method(method).learner]
            base = planned.training_params(method)
            assert planned.training_params(method, layout.ALL_CLASSES) == base | spec.cross_dataset
            for variant in variants:
                changed = planned.training_params(method, variant)
                assert changed == base | layout.parse_variant(variant).prompt_overrides, (method, variant)
        maple = planned.training_params("dicap_maple", layout.ALL_CLASSES)
        assert (maple["depth"], maple["epochs"], maple["lr"], maple["n_ctx"], maple["batch_size"]) == (3, 2, 0.0026, 2, 4)
        assert planned.training_params("maple")["depth"] == 9
        assert planned.learner_params("maple", layout.ALL_CLASSES)["depth"] == 3  # evaluation builds the same towers


# The paper suite's shards per seed of main, as every dataset's base half sizes them: the
# all_classes variant must not move them (a changed count renames every shard file).
PAPER_MAIN_SHARDS = {"imagenet": 2, "caltech101": 1, "oxford_pets": 1, "stanford_cars": 1, "oxford_flowers": 1, "food101": 1,
                     "fgvc_aircraft": 1, "sun397": 1, "dtd": 1, "eurosat": 1, "ucf101": 1, "flickr30k": 1, "mscoco": 1, "vqav2": 2}


def test_all_classes_shards_and_walltimes_follow_every_class_and_main_keeps_its_own(paper):
    assert {d: paper.shards(d) for d in PAPER_MAIN_SHARDS} == PAPER_MAIN_SHARDS
    per = paper.config["counterfactual"]["images_per_shard"]
    assert budget.counterfactuals_per_seed("imagenet", paper.config, layout.ALL_CLASSES) == 16000
    assert paper.shards("imagenet", layout.ALL_CLASSES) == 4 and per == 4000
    others = [layout.guidance_variant(3.0, paper.counterfactual), layout.TRUE_CF, layout.context_variant(8)]
    for d in paper.datasets:
        every = paper.shards(d, layout.ALL_CLASSES)
        assert every == max(1, math.ceil(16 * budget.costs()["datasets"]["classes"][d] / per)) >= paper.shards(d)
        assert paper.shard_minutes(d, 1, layout.ALL_CLASSES) >= paper.shard_minutes(d)
        for v in others:  # every variant but all_classes is sized as main
            assert (paper.shards(d, v), paper.shard_minutes(d, 2, v), paper.shard_compiles(d, v)) == (
                paper.shards(d), paper.shard_minutes(d, 2), paper.shard_compiles(d))
            assert all(paper.learner_minutes(m, d, 1, v) == paper.learner_minutes(m, d) for m in paper.methods)
    assert paper.shard_compiles("imagenet", layout.ALL_CLASSES) == 1  # 4,000 images a shard repay the compilation


@pytest.mark.parametrize("method", ["coop", "cocoop", "dicap", "dicap_maple"])
def test_all_classes_prompt_walltime_is_the_budget_of_every_class(paper, method):
    parsed = parse_method(method)
    images = budget.training_images("imagenet", paper.config, layout.ALL_CLASSES) * (1 + parsed.uses_counterfactuals)
    seconds = budget.prompt_seconds(parsed.learner, images, paper.config["prompt"]["epochs"])
    minutes = paper.learner_minutes(method, "imagenet", 1, layout.ALL_CLASSES)
    assert minutes == min(budget.walltime_minutes(seconds), parsed.spec.cluster_minutes) >= paper.learner_minutes(method, "imagenet")
    assert paper.learner_minutes(method, "imagenet", 2, layout.ALL_CLASSES) == 2 * minutes
    assert paper.learner_minutes("zeroshot", "imagenet", 1, layout.ALL_CLASSES) == budget.NO_TRAINING_MINUTES
