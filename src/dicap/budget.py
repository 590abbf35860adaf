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


def counterfactuals_per_seed(dataset: str, config: dict[str, Any]) -> int | None:
    """Counterfactuals one seed generates: one per few-shot image of a base class, or the
    ``tasks.percent`` share of a text dataset's pool; None for a dataset ``budget.yaml`` does not size."""
    base, pool = base_classes(dataset), costs()["datasets"]["pool"].get(dataset)
    if base is not None:
        return config["data"]["shots"] * base
    return None if pool is None else pool * config["tasks"]["percent"] // 100


def shard_count(dataset: str, config: dict[str, Any]) -> int:
    """Shards per dataset and seed: enough for ``counterfactual.images_per_shard`` images each on
    the paper suite (a tiny dataset is one shard, not 16 near-empty ones), else ``counterfactual.shards``."""
    cf = config["counterfactual"]
    images, per = counterfactuals_per_seed(dataset, config), cf.get("images_per_shard")
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


def training_images(dataset: str, config: dict[str, Any]) -> int | None:
    """Few-shot training images of one seed (base classes only), None if unknown."""
    base = base_classes(dataset)
    return None if base is None else config["data"]["shots"] * base


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
    """The GPU stages of ``plan``'s main run (Tables 1-3, no ablation), in the workflow's order.

    ``plan`` is a :class:`dicap.plan.Plan`, which sizes its shards and walltimes with this
    module: the ``dicap budget`` command (dicap.tools) builds it."""
    from dicap import layout
    from dicap.prompting.methods import parse_method

    config, seeds = plan.config, len(plan.seeds)
    compiles = (config["diffusion"].get("pretrained") or {}).get("compile", False)
    load, clip_rate = _cost("model_load"), _cost("clip_encoding")["images_per_second"]
    estimated = {k for k, c in costs()["costs"].items() if not c["measured"]}
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
        cf_images = counterfactuals_per_seed(d, config)
        generated = plan.counterfactual_variant(layout.MAIN, d) is not None
        if generated and cf_images is None:
            unsized["counterfactual_shard"].append(d)
        if generated:
            shards = plan.shards(d)
            parts = [shard_seconds(len(range(k, cf_images or 0, shards)), compiles)
                     for k in range(shards)]
            stages["counterfactual_shard"].add(seeds * shards, seeds * sum(p[0] for p in parts), fixed=seeds * sum(p[1] for p in parts))
        shots = training_images(d, config) or cf_images or 0
        stages["encode_train_features"].add(seeds, seeds * (shots + (cf_images or 0) * generated) / clip_rate)
    for d in plan.datasets:
        images = training_images(d, config)
        if images is None:
            unsized["train_prompt"].append(d)
        per_image_methods = 0  # those that encode a prompt (or the image) per test image; the others read cached features
        for m in plan.methods:
            parsed = parse_method(m)
            seconds = prompt_seconds(parsed.learner, (images or 0) * (2 if parsed.uses_counterfactuals else 1),
                                     config["prompt"]["epochs"]) - load["seconds"]
            stages["train_prompt"].add(seeds, seeds * seconds, gpu=parsed.trains)
            per_image_methods += parsed.spec.uses_pixels or parsed.spec.conditional
        test = costs()["datasets"]["test_images"].get(d) or 0
        stages["evaluate"].add(seeds, seeds * test * _cost("evaluation")["seconds_per_image"] * per_image_methods)
    for d in plan.text_datasets:
        items, batch = counterfactuals_per_seed(d, config) or 0, config["prompt"]["batch_size"]
        steps = config["prompt"]["epochs"] * math.ceil(items / batch)
        for m in config["tasks"]["methods"]:
            trains = parse_method(m).trains
            stages["train_task_prompt"].add(seeds, seeds * steps * _cost("vqa_step")["seconds"], gpu=trains)
    stages["counterfactual_shard"].peak_gib = _cost("counterfactual")["peak_gib"]
    for rule, uses in {"train_prompt": "prompt_training", "evaluate": "evaluation"}.items():
        stages[rule].measured = uses not in estimated
    stages["train_task_prompt"].measured = not plan.task_datasets["retrieval"]  # measured: a VQA step only
    for stage in stages.values():
        stage.unsized = tuple(unsized[stage.rule])
    return [s for s in stages.values() if s.jobs]


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
