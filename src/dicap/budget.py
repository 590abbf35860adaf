"""What a config costs on a GPU cluster, before the first job: ``dicap budget``.

Per stage of the plan (:mod:`dicap.plan`): its jobs, its GPU-hours (the measured per-item cost
times the items, plus each job's fixed cost: loading the models and, where it pays, compiling
the UNet), its peak GPU memory, and the total to ask for.  The costs are data, not code:
``budget.yaml`` beside this module holds each figure with its source (the paper suite's
measurements on one H200) and marks what is an estimate.  The same figures size the paper
suite's counterfactual shards and its walltime requests, so the plan asks for what the budget
says.  Imports no torch: the Snakefile plans with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from dicap import layout
from dicap.prompting.methods import parse_method

COSTS_FILE = Path(__file__).with_name("budget.yaml")
NO_TRAINING_MINUTES = 10  # a method that learns nothing (zeroshot) only writes its untrained context


@cache
def costs() -> dict[str, Any]:
    """``budget.yaml``: the measured costs, the datasets' sizes and the walltime rule."""
    return yaml.safe_load(COSTS_FILE.read_text())


def _cost(name: str) -> dict[str, Any]:
    return costs()["costs"][name]


def base_classes(dataset: str) -> int | None:
    """A classification dataset's base classes (the first half of its labels), None if unknown."""
    classes = costs()["datasets"]["classes"].get(dataset)
    return None if classes is None else math.ceil(classes / 2)


def trained_classes(dataset: str, variant: str = layout.MAIN) -> int | None:
    """The classes ``variant`` learns on: every class for one that trains on all of them
    (``all_classes``, the transfer source), the base half otherwise; None if unknown."""
    if layout.parse_variant(variant).all_classes:
        return costs()["datasets"]["classes"].get(dataset)
    return base_classes(dataset)


def counterfactuals_per_seed(dataset: str, config: dict[str, Any], variant: str = layout.MAIN) -> int | None:
    """Counterfactuals one seed generates: one per few-shot image of a class ``variant`` learns
    on, or the ``tasks.percent`` share of a text dataset's pool; None for a dataset ``budget.yaml`` does not size."""
    images, pool = training_images(dataset, config, variant), costs()["datasets"]["pool"].get(dataset)
    if images is not None:
        return images
    return None if pool is None else pool * config["tasks"]["percent"] // 100


def shard_count(dataset: str, config: dict[str, Any], variant: str = layout.MAIN) -> int:
    """Shards per dataset, variant and seed: enough for ``counterfactual.images_per_shard`` images
    each on the paper suite (a tiny dataset is one shard, not 16 near-empty ones), else ``counterfactual.shards``."""
    cf = config["counterfactual"]
    images, per = counterfactuals_per_seed(dataset, config, variant), cf.get("images_per_shard")
    if config["suite"] != "paper" or per is None or images is None:
        return cf["shards"]
    return max(1, math.ceil(images / per))


def compile_pays(images: int) -> bool:
    """Whether compiling the UNet saves more than it costs on a job of ``images`` counterfactuals."""
    cf = _cost("counterfactual")
    saved = images * (cf["seconds_per_image"]["eager"] - cf["seconds_per_image"]["compiled"])
    return saved > cf["compile_seconds"]


def shard_seconds(images: int, compile: bool = True) -> tuple[float, float]:
    """GPU seconds of one counterfactual shard: (the images, the fixed cost: model load and
    compilation where it pays)."""
    cf, compiled = _cost("counterfactual"), compile and compile_pays(images)
    per_image = cf["seconds_per_image"]["compiled" if compiled else "eager"]
    return images * per_image, _cost("model_load")["seconds"] + (cf["compile_seconds"] if compiled else 0)


def retried(request: int, attempt: int = 1) -> int:
    """A cluster request (minutes, MB) for ``attempt``: doubled per retry (``retries:`` in the
    profile), since a job killed for time or memory would be killed again at the same size."""
    return request * 2 ** (attempt - 1)


def walltime_minutes(seconds: float, attempt: int = 1) -> int:
    """A job's walltime request: its budget times the safety factor, at least the floor, doubled per retry."""
    rule = costs()["walltime"]
    return retried(max(rule["floor_minutes"], math.ceil(seconds * rule["safety"] / 60)), attempt)


def training_images(dataset: str, config: dict[str, Any], variant: str = layout.MAIN) -> int | None:
    """Few-shot training images of one seed (the classes ``variant`` learns on), None if unknown."""
    classes = trained_classes(dataset, variant)
    return None if classes is None else config["data"]["shots"] * classes


def prompt_seconds(learner: str, images: int, epochs: int) -> float:
    """GPU seconds of one prompt training: model load plus images x epochs at the learner's rate."""
    rate = _cost("prompt_training")["seconds_per_image_epoch"][learner]
    return _cost("model_load")["seconds"] + images * epochs * rate


@dataclass
class Stage:
    """One rule's share of the budget."""

    rule: str
    jobs: int = 0
    gpu_jobs: int = 0
    item_seconds: float = 0.0  # the per-item cost x the items
    fixed_seconds: float = 0.0  # each job's model load (and compilation)
    peak_gib: float | None = None
    measured: bool = True  # every per-item cost it uses was measured
    unsized: tuple[str, ...] = ()  # datasets budget.yaml has no size for (left out of the hours)

    def add(self, jobs: int, items: float = 0.0, gpu: bool = True, fixed: float | None = None) -> None:
        """``jobs`` jobs whose items take ``items`` GPU seconds in all; each loads the models
        once (``fixed``: their fixed seconds in all, when not just that)."""
        self.jobs += jobs
        if gpu:
            self.gpu_jobs += jobs
            self.item_seconds += items
            self.fixed_seconds += jobs * _cost("model_load")["seconds"] if fixed is None else fixed

    @property
    def gpu_hours(self) -> float:
        return (self.item_seconds + self.fixed_seconds) / 3600


def estimate(plan: Any) -> list[Stage]:
    """The GPU stages of ``plan``'s main run (Tables 1-3, no ablation), in the workflow's order,
    then those of its transfer tables where it has any (:meth:`dicap.plan.Plan.transfer_runs`).

    ``plan`` is a :class:`dicap.plan.Plan`, which sizes its shards and walltimes with this
    module: the ``dicap budget`` command (dicap.tools) builds it."""
    config, seeds = plan.config, len(plan.seeds)
    clip_rate = _rate()
    stages = {rule: Stage(rule) for rule in (
        "clip_backbone", "counterfactual_shard", "encode_train_features", "encode_eval_features",
        "train_prompt", "evaluate", "train_task_prompt")}
    unsized: dict[str, list[str]] = {rule: [] for rule in stages}
    every = [*plan.datasets, *plan.text_datasets]
    for d in every:
        test = costs()["datasets"]["test_images"].get(d)
        stages["clip_backbone"].add(1, (test or 0) / clip_rate)
        stages["encode_eval_features"].add(1, (test or 0) / clip_rate)
        if test is None:
            unsized["encode_eval_features"].append(d)
        _add_training_data(plan, stages, unsized, d, layout.MAIN)
    for d in plan.datasets:
        _add_prompts(plan, stages["train_prompt"], unsized["train_prompt"], d, layout.MAIN)
        test = costs()["datasets"]["test_images"].get(d) or 0
        stages["evaluate"].add(seeds, seeds * test * _cost("evaluation")["seconds_per_image"] * _per_image_methods(plan.methods))
    for d in plan.text_datasets:
        items, batch = counterfactuals_per_seed(d, config) or 0, config["prompt"]["batch_size"]
        steps = config["prompt"]["epochs"] * math.ceil(items / batch)
        for m in config["tasks"]["methods"]:
            trains = parse_method(m).trains
            stages["train_task_prompt"].add(seeds, seeds * steps * _cost("vqa_step")["seconds"], gpu=trains)
    stages["train_task_prompt"].measured = not plan.task_datasets["retrieval"]  # measured: a VQA step only
    _add_transfer(plan, stages, unsized)
    estimated = {k for k, c in costs()["costs"].items() if not c["measured"]}
    for rule, stage in stages.items():
        stage.unsized = tuple(unsized[rule])
        base = rule.split(" ")[0]  # a transfer source's own variant: "train_prompt (all_classes)"
        if base == "counterfactual_shard":
            stage.peak_gib = _cost("counterfactual")["peak_gib"]
        if base in ("train_prompt", "evaluate", "evaluate_transfer"):
            stage.measured = ("evaluation" if base.startswith("evaluate") else "prompt_training") not in estimated
    return [s for s in stages.values() if s.jobs]


def _add_training_data(plan: Any, stages: dict[str, Stage], unsized: dict[str, list[str]], dataset: str,
                       variant: str, suffix: str = "") -> None:
    """``dataset``'s counterfactual shards (where ``variant`` generates its own) and the encoding
    of its training images, per seed, into the stages named ``rule + suffix``."""
    config, seeds = plan.config, len(plan.seeds)
    compiles = (config["diffusion"].get("pretrained") or {}).get("compile", False)
    cf_images = counterfactuals_per_seed(dataset, config, variant)
    generated = plan.counterfactual_variant(variant, dataset) == variant
    if generated and cf_images is None:
        unsized["counterfactual_shard" + suffix].append(dataset)
    if generated:
        shards = plan.shards(dataset, variant)
        parts = [shard_seconds(len(range(k, cf_images or 0, shards)), compiles) for k in range(shards)]
        stages["counterfactual_shard" + suffix].add(
            seeds * shards, seeds * sum(p[0] for p in parts), fixed=seeds * sum(p[1] for p in parts))
    shots = training_images(dataset, config, variant) or cf_images or 0
    stages["encode_train_features" + suffix].add(seeds, seeds * (shots + (cf_images or 0) * generated) / _rate())


def _add_prompts(plan: Any, stage: Stage, unsized: list[str], dataset: str, variant: str) -> None:
    """Every method ``variant`` trains on ``dataset``, per seed."""
    config, seeds = plan.config, len(plan.seeds)
    images = training_images(dataset, config, variant)
    if images is None:
        unsized.append(dataset)
    for m in plan.variant_methods(variant):
        parsed = parse_method(m)
        seconds = prompt_seconds(parsed.learner, (images or 0) * (2 if parsed.uses_counterfactuals else 1),
                                 config["prompt"]["epochs"]) - _cost("model_load")["seconds"]
        stage.add(seeds, seeds * seconds, gpu=parsed.trains)


def _per_image_methods(methods: list[str]) -> int:
    """How many of ``methods`` encode a prompt (or the image) per test image at evaluation; the
    others read cached features."""
    return sum(bool(spec.uses_pixels or spec.conditional) for spec in (parse_method(m).spec for m in methods))


def _add_transfer(plan: Any, stages: dict[str, Stage], unsized: dict[str, list[str]]) -> None:
    """The transfer tables' jobs (rules/transfer.smk): each source variant's own counterfactuals,
    training features and prompts (generated and trained once for both tables; main's are
    counted already), one ``encode_target_features`` job per (source, target) and one
    ``evaluate_transfer`` job per (source, variant, target, seed)."""
    runs = list(dict.fromkeys(run for table in layout.TRANSFER_TABLES for run in plan.transfer_runs(table)))
    seeds, per_image = len(plan.seeds), _cost("evaluation")["seconds_per_image"]
    for source, variant in dict.fromkeys((d, v) for d, v, _ in runs):
        if variant == layout.MAIN:
            continue
        suffix = f" ({variant})"
        for rule in ("counterfactual_shard", "encode_train_features", "train_prompt"):
            stages.setdefault(rule + suffix, Stage(rule + suffix))
            unsized.setdefault(rule + suffix, [])
        _add_training_data(plan, stages, unsized, source, variant, suffix)
        _add_prompts(plan, stages["train_prompt" + suffix], unsized["train_prompt" + suffix], source, variant)
    for rule in ("encode_target_features", "evaluate_transfer"):
        stages.setdefault(rule, Stage(rule))
        unsized.setdefault(rule, [])
    for _source, target in dict.fromkeys((d, t) for d, _, t in runs):
        test = costs()["datasets"]["test_images"].get(target)
        stages["encode_target_features"].add(1, (test or 0) / _rate())
        if test is None:
            unsized["encode_target_features"].append(target)
    for _source, variant, target in runs:
        test = costs()["datasets"]["test_images"].get(target) or 0
        stages["evaluate_transfer"].add(seeds, seeds * test * per_image * _per_image_methods(plan.variant_methods(variant)))


def _rate() -> float:
    """CLIP's image-encoding rate, images per second."""
    return _cost("clip_encoding")["images_per_second"]


def format_budget(stages: list[Stage]) -> str:
    """The budget as a table, its total, what to ask for, and where the figures come from."""
    lines = ["| rule | jobs | GPU jobs | items, GPU-h | fixed (load, compile), GPU-h | GPU-h | peak GPU memory |",
             "|---|---|---|---|---|---|---|"]
    for s in stages:
        peak = f"{s.peak_gib:g} GiB" if s.peak_gib is not None else "not measured"
        items = f"{s.item_seconds / 3600:.1f}" + ("" if s.measured else " (estimate)")
        lines.append(f"| {s.rule} | {s.jobs} | {s.gpu_jobs} | {items} | {s.fixed_seconds / 3600:.1f} | {s.gpu_hours:.1f} | {peak} |")
    total, margin = sum(s.gpu_hours for s in stages), costs()["allocation_margin"]
    lines.append(f"| total | {sum(s.jobs for s in stages)} | {sum(s.gpu_jobs for s in stages)} | | | {total:.1f} | |")
    load = _cost("model_load")
    sources = (f"costs: src/dicap/{COSTS_FILE.name} (each with its source), measured on {costs()['device']}; "
               "'(estimate)' marks a per-item cost nobody has measured")
    lines += ["", f"ask for {math.ceil(total * margin)} GPU-hours: the total x {margin:g} (retries, estimates)",
              sources + ("" if load["measured"] else f"; the model load ({load['seconds']} s a job) is an estimate too")]
    lines += [f"not sized ({s.rule}): {', '.join(s.unsized)} (add them to {COSTS_FILE.name} datasets)" for s in stages if s.unsized]
    return "\n".join(lines)
