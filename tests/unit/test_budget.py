"""The GPU budget (src/dicap/budget.py) and its costs file: what a config costs before its first job."""

from __future__ import annotations

import math

import pytest

from dicap import budget, layout
from dicap.config import load_config
from dicap.plan import Plan
from dicap.prompting.registry import LEARNERS
from helpers import REPO


@pytest.fixture(scope="module")
def paper() -> dict:
    return load_config(REPO / "config.paper.yaml")


def _stages(config: dict, **top) -> dict[str, budget.Stage]:
    return {s.rule: s for s in budget.estimate(Plan({**config, **top}))}


def test_every_cost_names_its_source_and_every_learner_has_one():
    data = budget.costs()
    for name, cost in data["costs"].items():
        assert cost["source"] and isinstance(cost["measured"], bool), name
        assert cost["measured"] == (not cost["source"].startswith("estimate")), name
    assert set(data["costs"]["prompt_training"]["seconds_per_image_epoch"]) == set(LEARNERS)
    # every trainable dataset, and the test-only domain-generalization targets, which have no classes to train
    transfer = load_config(REPO / "config.paper.yaml")["transfer"]
    assert set(data["datasets"]["test_images"]) == set(data["datasets"]["classes"]) | set(transfer["domain_generalization"])
    assert data["datasets"]["targets_source"] and all(f"ImageNet-{t}" in data["datasets"]["targets_source"] for t in ("V2", "Sketch", "A", "R"))


def test_the_counterfactual_figures_are_the_documented_h200_measurements():
    """budget.yaml quotes docs/cluster.md; a re-measurement changes both."""
    doc = (REPO / "docs/cluster.md").read_text()
    cf = budget.costs()["costs"]["counterfactual"]
    assert f"**{cf['seconds_per_image']['compiled']}**" in doc and f"| {cf['seconds_per_image']['eager']} (1.19×)" in doc
    assert f"Compiling took {cf['compile_seconds']} s" in doc and f"peak memory {cf['peak_gib']} GiB" in doc


@pytest.mark.parametrize("images", [0, 1, 500, 2000, 2400, 8000])
def test_compilation_is_paid_only_where_it_saves_more_than_it_costs(images):
    eager, compiled = (budget.shard_seconds(images, compile=c) for c in (False, True))
    assert sum(compiled) <= sum(eager)
    assert budget.compile_pays(images) == (sum(compiled) < sum(eager))
    assert budget.compile_pays(images) == (images > 2000)  # 204 s over 0.087 s saved per image: about 2,345


@pytest.mark.parametrize("seconds, attempt", [(0, 1), (60, 1), (3600, 1), (3600, 2), (20000, 3)])
def test_walltime_is_the_budget_with_a_margin_and_doubles_per_retry(seconds, attempt):
    rule = budget.costs()["walltime"]
    minutes = budget.walltime_minutes(seconds, attempt)
    assert minutes >= rule["floor_minutes"] * 2 ** (attempt - 1) and minutes * 60 >= seconds * rule["safety"]
    assert minutes == budget.walltime_minutes(seconds) * 2 ** (attempt - 1)


@pytest.mark.parametrize("request_, attempt, expected", [(30, 1, 30), (30, 2, 60), (30, 3, 120), (16000, 2, 32000), (1, 4, 8)])
def test_a_retry_doubles_the_request_per_attempt(request_, attempt, expected):
    assert budget.retried(request_, attempt) == expected


def test_the_paper_counterfactual_stage_is_its_images_at_the_measured_rate(paper):
    stages = _stages(paper, tasks={**paper["tasks"], "datasets": {}})
    cf = stages["counterfactual_shard"]
    images = 3 * 16 * sum(math.ceil(n / 2) for n in budget.costs()["datasets"]["classes"].values())
    assert images == 52704  # docs/cluster.md
    per_image = budget.costs()["costs"]["counterfactual"]["seconds_per_image"]
    assert images * per_image["compiled"] <= cf.item_seconds <= images * per_image["eager"]
    assert cf.jobs == cf.gpu_jobs == 3 * sum(Plan(paper).shards(d) for d in paper["datasets"])
    assert cf.fixed_seconds >= cf.jobs * budget.costs()["costs"]["model_load"]["seconds"] and cf.peak_gib == 6.4


@pytest.mark.parametrize("methods", [["coop"], ["zeroshot", "kgcoop"], ["zeroshot", "coop", "dicap", "maple"]])
def test_no_training_takes_no_gpu_and_no_counterfactual_method_no_shard(paper, methods):
    stages = _stages(paper, methods=methods, seeds=[1, 2], tasks={**paper["tasks"], "datasets": {}})
    n = len(paper["datasets"]) * 2
    assert stages["train_prompt"].jobs == n * len(methods)
    assert stages["train_prompt"].gpu_jobs == n * len([m for m in methods if m != "zeroshot"])
    assert ("counterfactual_shard" in stages) == ("dicap" in methods)
    assert sum(s.gpu_hours for s in stages.values()) > 0


TRANSFER_STAGES = ("counterfactual_shard (all_classes)", "encode_train_features (all_classes)",
                   "train_prompt (all_classes)", "encode_target_features", "evaluate_transfer")


@pytest.mark.parametrize("dg, cross", [([], []), (["imagenet_a"], []), ([], ["dtd", "eurosat"]), (None, None)])
def test_the_transfer_stages_are_counted_exactly_when_the_plan_has_transfer_runs(paper, dg, cross):
    """None: the paper config's own targets (15: ImageNet, the four shifts, the ten other datasets)."""
    transfer = {**paper["transfer"], **({} if dg is None else {"domain_generalization": dg, "cross_dataset": cross})}
    plan = Plan({**paper, "transfer": transfer})
    stages, seeds = _stages(paper, transfer=transfer), len(paper["seeds"])
    main = _stages(paper, transfer={**transfer, "domain_generalization": [], "cross_dataset": []})
    targets = {t for table in ("domain_generalization", "cross_dataset") for _, _, t in plan.transfer_runs(table)}
    assert set(stages) - set(main) == (set(TRANSFER_STAGES) if targets else set())
    for rule, stage in main.items():  # the transfer tables add their own rows, never to the main run's
        assert (stages[rule].jobs, stages[rule].gpu_hours) == (stage.jobs, stage.gpu_hours), rule
    if not targets:
        return
    assert stages["encode_target_features"].jobs == len(targets) and stages["evaluate_transfer"].jobs == len(targets) * seeds
    assert stages["counterfactual_shard (all_classes)"].jobs == 4 * seeds  # 16,000 images at 4,000 a shard
    assert stages["train_prompt (all_classes)"].jobs == len(paper["methods"]) * seeds
    assert stages["encode_train_features (all_classes)"].jobs == seeds
    assert not any(stages[rule].unsized for rule in TRANSFER_STAGES)
    test = budget.costs()["datasets"]["test_images"]
    assert stages["encode_target_features"].item_seconds == pytest.approx(
        sum(test[t] for t in targets) / budget.costs()["costs"]["clip_encoding"]["images_per_second"])


def test_the_paper_transfer_is_the_dry_runs_15_encodings_and_45_evaluations(paper):
    """docs/cluster.md's plan of results/domain_generalization.csv and results/cross_dataset.csv."""
    stages = _stages(paper)
    assert (stages["encode_target_features"].jobs, stages["evaluate_transfer"].jobs) == (15, 45)
    assert (stages["counterfactual_shard (all_classes)"].jobs, stages["train_prompt (all_classes)"].jobs) == (12, 33)
    images = 3 * 16 * 1000  # every ImageNet class, generated once for both tables
    per_image = budget.costs()["costs"]["counterfactual"]["seconds_per_image"]
    assert images * per_image["compiled"] <= stages["counterfactual_shard (all_classes)"].item_seconds <= images * per_image["eager"]
    assert stages["counterfactual_shard (all_classes)"].peak_gib == 6.4
    assert not stages["evaluate_transfer"].measured and not stages["train_prompt (all_classes)"].measured
    assert budget.format_budget(list(stages.values())).count("(all_classes) |") == 3


@pytest.mark.parametrize("dataset", ["imagenet", "eurosat", "sun397", "vqav2"])
def test_all_classes_sizes_by_every_class_and_main_by_the_base_half(paper, dataset):
    classes = budget.costs()["datasets"]["classes"].get(dataset)
    main, every = (budget.counterfactuals_per_seed(dataset, paper, v) for v in (layout.MAIN, layout.ALL_CLASSES))
    assert main == budget.counterfactuals_per_seed(dataset, paper)  # the default is main
    if classes is None:  # a text dataset: its pool, whatever the variant
        assert main == every == budget.costs()["datasets"]["pool"][dataset] * paper["tasks"]["percent"] // 100
        return
    assert (main, every) == (16 * math.ceil(classes / 2), 16 * classes)
    assert budget.training_images(dataset, paper, layout.ALL_CLASSES) == every
    assert budget.training_images(dataset, paper) == budget.training_images(dataset, paper, layout.guidance_variant(3.0, paper["counterfactual"])) == main
