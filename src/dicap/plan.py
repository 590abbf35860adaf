"""The study's plan: what a config asks the workflow to build, as pure functions of it.

Which variants each ablation compares, which methods each variant trains, what a variant
reuses from another, which datasets the text tasks score, which artifacts DVC shares, and
what a learner's cluster job asks for: the design of the study, written once and unit-tested
without Snakemake.  ``rules/common.smk`` only wraps these in its input functions.  Paths come
from :mod:`dicap.layout` (one owner of the build tree and of the variant names); learner facts
from :mod:`dicap.prompting.registry`.
"""

from __future__ import annotations

import math
import os
from functools import cached_property
from typing import Any

from dicap import budget, layout
from dicap.data.embedded import DATASETS as EMBEDDED_DATASETS
from dicap.data.embedded import RENDER_KEYS
from dicap.io import params_hash
from dicap.prompting.methods import READINGS, method_params, parse_method

# The generator curve's per-dataset table (embedded suite).  Kept here, not in layout.py: every job
# hashes layout.py (code_version), so a new path there would rerun the whole study.
GENERATOR_CURVE = "audit/{dataset}/generator_curve.parquet"

# The ablations by name (``snakemake ablation_<name>``); the prompt ablations change only the
# prompt training, so they have no audit of their own.
ABLATION_NAMES = ("guidance_scale", "sampling", "true_cf", "context", "loss")
# Each prompt ablation, with the prompt keys it sweeps (its rows carry these settings).
PROMPT_ABLATION_KEYS = {"context": ("n_ctx",), "loss": ("cf_weight", "cf_temperature", "cf_positive_weight")}
# The loss ablation's config lists, by the prompt key each sweeps.
LOSS_SWEEPS = {"cf_weight": "cf_weights", "cf_temperature": "cf_temperatures", "cf_positive_weight": "cf_positive_weights"}
PROMPT_ABLATIONS = tuple(PROMPT_ABLATION_KEYS)
# DiCap's three readings on CoOp (the paper's hard negative, both, the labelled counterfactual alone): what
# every ablation that is not main trains, so no reading is left out of a table (docs/method.md).
ABLATION_READINGS = tuple(READINGS)
# The two shortcut controls: CoOp on unbiased shots (negative), DiCap on the true counterfactuals (positive).
CONTROL_VARIANTS = (layout.UNBIASED_SHOTS, layout.TRUE_CF)
SPLIT_KEY_LENGTH = 10  # hex digits of a split's parameter hash in its file name
# What prepare_dataset reads of the data block for a downloaded (paper) dataset (jobs/data.py).
DOWNLOAD_KEYS = ("root", "image_size")
# The clip block's per-dataset keys (embedded suite): clip_params resolves them for one dataset.
DATASET_CLIP_KEYS = ("dataset_steps", "pretrain_with")
# The prompt keys only the trainer reads (prompting/trainer.py): evaluation's params leave them out.
TRAINER_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "cf_weight", "cf_temperature", "cf_positive_weight")


def split_key(params: dict[str, Any]) -> str:
    """The short hash naming a few-shot split drawn with ``params``."""
    return params_hash(params)[:SPLIT_KEY_LENGTH]


class Plan:
    """The grid one validated config asks for.  Every answer is a pure function of the config."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.paper = config["suite"] == "paper"
        self.datasets: list[str] = config["datasets"]
        self.seeds: list[int] = config["seeds"]
        self.methods: list[str] = config["methods"]
        self.counterfactual: dict[str, Any] = config["counterfactual"]
        self.build = layout.Build(config["suite"])

    # --- datasets and splits ---------------------------------------------------------------

    @cached_property
    def task_datasets(self) -> dict[str, list[str]]:
        """Task -> its datasets: the classification datasets on the embedded suite, datasets of
        their own (Flickr30k, MSCOCO, VQAv2) on the paper suite."""
        tasks = self.config["tasks"]["datasets"]
        return {task: (tasks.get(task, []) if self.paper else list(self.datasets)) for task in layout.TASK_TABLES}

    @cached_property
    def text_datasets(self) -> list[str]:
        """The datasets that are stores of their own for retrieval or VQA (none on the embedded suite)."""
        return sorted({d for ds in self.task_datasets.values() for d in ds} - set(self.datasets))

    @cached_property
    def controls(self) -> list[str]:
        """Datasets that run the shortcut controls (the paper suite has no shortcut splits)."""
        return [] if self.paper else [d for d in self.config["controls"] if d in self.datasets]

    @cached_property
    def split_params(self) -> dict[str, dict[str, Any]]:
        """Which parameters draw each kind of few-shot split: ``shots`` (biased on the embedded
        suite), ``unbiased`` (the negative control's), ``text`` (a text dataset's share) and
        ``all`` (the shots' draw over every class, not the base half: ``all_classes``)."""
        data = self.config["data"]
        shots = {k: data[k] for k in ("shots", "val_shots" if self.paper else "spurious_strength")}
        return {
            "shots": shots,
            "unbiased": {"shots": data["shots"], "spurious_strength": None},
            "text": {"percent": self.config["tasks"]["percent"]},
            "all": shots | {"classes": layout.parse_variant(layout.ALL_CLASSES).classes},
        }

    @cached_property
    def split_params_by_key(self) -> dict[str, dict[str, Any]]:
        return {self.split_keys[kind]: p for kind, p in self.split_params.items()}

    @cached_property
    def split_keys(self) -> dict[str, str]:
        """Each kind of split's file key, hashed once (every job's input function asks for it)."""
        return {kind: split_key(p) for kind, p in self.split_params.items()}

    def split_kind(self, dataset: str, variant: str = layout.MAIN) -> str:
        """The split a job reads: a text dataset's, the negative control's, every class's, or the shots."""
        if dataset in self.text_datasets:
            return "text"
        if variant == layout.UNBIASED_SHOTS:
            return "unbiased"
        return "all" if layout.parse_variant(variant).all_classes else "shots"

    def split_path(self, dataset: str, seed: int | str, variant: str = layout.MAIN) -> str:
        key = self.split_keys[self.split_kind(dataset, variant)]
        return self.build(layout.SPLIT, dataset=dataset, seed=seed, split_key=key)

    def data_params(self, dataset: str) -> dict[str, Any]:
        """The keys of the data block prepare_dataset reads for ``dataset``, and no others (the
        renderer's, or a download's root and image size); a VQA store also fixes its test questions.
        The few-shot draw's keys (shots, spurious_strength, val_shots) are make_split's: changing
        one redraws the splits and what follows, never the renders or the backbones."""
        keys = RENDER_KEYS if dataset in EMBEDDED_DATASETS else DOWNLOAD_KEYS
        extra = {"vqa_test_items": self.config["tasks"]["vqa_test_items"]} if dataset in self.text_datasets else {}
        return {k: v for k, v in self.config["data"].items() if k in keys} | extra

    def clip_params(self, dataset: str) -> dict[str, Any]:
        """The clip block one dataset's backbone trains with: its own step count where one is set,
        and the other worlds it also pretrains on (:meth:`pretrained_with`) where there are any."""
        block = {k: v for k, v in self.config["clip"].items() if k not in DATASET_CLIP_KEYS}
        if self.paper:
            return block
        steps = self.config["clip"].get("dataset_steps", {}).get(dataset)
        block = block | {"train": block["train"] | {"steps": steps}} if steps else block
        others = self.pretrained_with(dataset)
        return block | {"pretrain_with": others} if others else block

    def pretrained_with(self, dataset: str) -> list[str]:
        """The other embedded datasets whose pretraining images and captions ``dataset``'s CLIP
        also learns from (``clip.pretrain_with``): the worlds it can be scored on unchanged
        (results/cross_dataset).  None on the paper suite, whose pretrained CLIP has seen the web."""
        return [] if self.paper else list(self.config["clip"].get("pretrain_with", {}).get(dataset, []))

    # --- variants and methods --------------------------------------------------------------

    @cached_property
    def counterfactual_methods(self) -> list[str]:
        """The configured methods that train on counterfactuals, every reading and learner (the
        true_cf control trains these); CoOp's hard negative when none is configured."""
        return [m for m in self.methods if parse_method(m).uses_counterfactuals] or ["dicap"]

    @cached_property
    def ablations(self) -> dict[str, list[str]]:
        """Ablation name -> the variants it compares, main included (variants equal to the
        config's own settings are main)."""
        ablations, cf, prompt = self.config["ablations"], self.counterfactual, self.config["prompt"]
        scales = [*ablations["guidance_scales"], cf["guidance_scale"]]
        losses = [layout.loss_variant(key, v, prompt) for key, values in LOSS_SWEEPS.items() for v in ablations[values]]
        return {
            "guidance_scale": _unique(layout.guidance_variant(s, cf) for s in scales),
            "sampling": _unique(layout.sampling_variant(s, cf) for s in ablations["samplings"]),
            "true_cf": [layout.MAIN, layout.TRUE_CF],
            "context": [layout.context_variant(n) for n in ablations["n_ctxs"]],
            "loss": _unique([layout.MAIN, *losses]),
        }

    @cached_property
    def figure_variants(self) -> list[str]:
        """The counterfactual grids' columns: main, then the other guidance scales they show."""
        scales = self.config["report"]["figure_guidance_scales"]
        return _unique([layout.MAIN, *(layout.guidance_variant(s, self.counterfactual) for s in scales)])

    def variant_methods(self, variant: str) -> list[str]:
        """Methods trained per variant: all of them for main and all_classes, CoOp on the unbiased
        shots, the configured counterfactual methods on the true counterfactuals, CoOp and DiCap's
        three readings for a context length, the readings whose loss reads the changed key for a
        loss setting (dicap_label has no hard negative to weigh), the three readings otherwise."""
        if variant in (layout.MAIN, layout.ALL_CLASSES):
            return list(self.methods)
        if variant == layout.UNBIASED_SHOTS:
            return ["coop"]
        if variant == layout.TRUE_CF:
            return self.counterfactual_methods
        prompt = layout.parse_variant(variant).prompt_overrides
        if "n_ctx" in prompt:
            return ["coop", *ABLATION_READINGS]
        if prompt:
            return [r for r in ABLATION_READINGS if set(prompt) & set(parse_method(r).loss_keys)]
        return list(ABLATION_READINGS)

    def training_params(self, method: str, variant: str = layout.MAIN) -> dict[str, Any]:
        """The parameters ``method`` trains with in ``variant``: its learner's recipe (its
        cross-dataset one when every class trains: ``all_classes``), the variant's change."""
        parsed = layout.parse_variant(variant)
        return method_params(self.config["prompt"], method, parsed.prompt_overrides, cross_dataset=parsed.all_classes)

    def learner_params(self, method: str, variant: str = layout.MAIN) -> dict[str, Any]:
        """What evaluation builds ``method``'s learner with: its training parameters but the
        trainer's (:data:`TRAINER_KEYS`), which a trained context no longer needs."""
        return {k: v for k, v in self.training_params(method, variant).items() if k not in TRAINER_KEYS}

    def prompt_ablation_settings(self, ablation: str) -> dict[str, dict[str, dict[str, Any]]]:
        """Variant -> method -> the values of the ablated keys it trains with, main included: the
        learner's own recipe counts, so a row's setting is what really trained.  Main also lists
        every method the other variants train, at its config settings: the report holds a sweep's
        other keys at these values (a method main does not train has no main point, only these)."""
        keys = PROMPT_ABLATION_KEYS[ablation]
        methods = {v: self.variant_methods(v) for v in _unique([layout.MAIN, *self.ablations[ablation]])}
        methods[layout.MAIN] = _unique(m for ms in methods.values() for m in ms)
        return {v: {m: {k: self.training_params(m, v)[k] for k in keys} for m in ms} for v, ms in methods.items()}

    @staticmethod
    def features_variant(variant: str) -> str:
        """Whose cached training features a variant reads: a prompt variant reuses main's (same
        shots, same counterfactuals)."""
        return layout.MAIN if layout.parse_variant(variant).prompt else variant

    def counterfactual_variant(self, variant: str, dataset: str | None = None) -> str | None:
        """Whose counterfactual files a variant trains on: its own, main's (true_cf and the
        prompt variants), or none: the negative control, and any variant none of whose methods
        (main: nor the text tasks', where the tasks score ``dataset``) uses counterfactuals, so
        that a baseline-only study never trains a diffusion model.  On the paper suite the text
        tasks have datasets of their own: their methods never make a classification dataset's."""
        if variant == layout.UNBIASED_SHOTS:
            return None
        tasks = variant == layout.MAIN and (dataset is None or any(dataset in ds for ds in self.task_datasets.values()))
        methods = (self.variant_methods(variant) if dataset not in self.text_datasets else []) + (
            list(self.config["tasks"]["methods"]) if tasks else [])
        if not any(parse_method(m).uses_counterfactuals for m in methods):
            return None
        return layout.generated_variant(variant)

    # --- cluster resources -----------------------------------------------------------------

    def by_suite(self, embedded: Any, paper: Any) -> Any:
        """A job size per suite: the paper suite's pretrained models and real images are far larger."""
        return paper if self.paper else embedded

    def learner_memory_mb(self, method: str, embedded_mb: int, paper_mb: int, attempt: int = 1) -> int:
        """Memory of one prompt-training job, doubling with each retry."""
        factor = parse_method(method).spec.memory_factor
        return budget.retried(self.by_suite(embedded_mb, paper_mb * factor), attempt)

    def learner_minutes(self, method: str, dataset: str | None = None, attempt: int = 1, variant: str = layout.MAIN) -> int:
        """Walltime of one prompt-training job on the cluster: its budget (:mod:`dicap.budget`, on
        the classes ``variant`` learns), never above the learner's registry ceiling; a short one for
        a method that learns nothing; doubling with each retry."""
        parsed = parse_method(method)
        images = budget.training_images(dataset, self.config, variant) if dataset and self.paper and parsed.trains else None
        if not self.paper:
            minutes = 30
        elif not parsed.trains:
            minutes = budget.NO_TRAINING_MINUTES
        elif images is None:
            minutes = parsed.spec.cluster_minutes
        else:
            images *= 2 if parsed.uses_counterfactuals else 1
            seconds = budget.prompt_seconds(parsed.learner, images, self.config["prompt"]["epochs"])
            minutes = min(budget.walltime_minutes(seconds), parsed.spec.cluster_minutes)
        return budget.retried(minutes, attempt)

    def learner_gpus(self, method: str) -> int:
        """GPUs of one prompt-training job: none for a method that learns nothing (zeroshot)."""
        return int(parse_method(method).trains)

    def shards(self, dataset: str, variant: str = layout.MAIN) -> int:
        """Counterfactual shards per seed of ``dataset`` in ``variant``: sized by image count on the
        paper suite (``counterfactual.images_per_shard``; ``all_classes`` generates for every class,
        not the base half), ``counterfactual.shards`` otherwise."""
        return budget.shard_count(dataset, self.config, variant)

    def shard_compiles(self, dataset: str, variant: str = layout.MAIN) -> int:
        """1 where a shard of ``dataset`` in ``variant`` compiles the UNet (the paper config asks for
        it and the shard's images repay the compilation, :func:`dicap.budget.compile_pays`), else 0."""
        images = budget.counterfactuals_per_seed(dataset, self.config, variant) if self.paper else None
        pays = images is None or budget.compile_pays(math.ceil(images / self.shards(dataset, variant)))
        return int(pays and self.paper and self.config["diffusion"]["pretrained"]["compile"])

    def shard_minutes(self, dataset: str, attempt: int = 1, variant: str = layout.MAIN) -> int:
        """Walltime of one counterfactual shard of ``variant``: its budget on the paper suite, an hour on the embedded one."""
        if not self.paper:
            return budget.retried(60, attempt)
        images = budget.counterfactuals_per_seed(dataset, self.config, variant)
        if images is None:
            return budget.retried(240, attempt)
        seconds = budget.shard_seconds(math.ceil(images / self.shards(dataset, variant)), self.config["diffusion"]["pretrained"]["compile"])
        return budget.walltime_minutes(sum(seconds), attempt)

    def reads_pixels(self, method: str) -> bool:
        """Whether ``method``'s learner runs the vision tower itself (its job reads images)."""
        return parse_method(method).spec.uses_pixels

    # --- targets ---------------------------------------------------------------------------

    @cached_property
    def task_results(self) -> list[str]:
        """Tables 2 and 3: both on the embedded suite, those of the tasks with datasets on the paper suite."""
        return [f"{layout.TASK_TABLES[t]}.{ext}" for t, ds in self.task_datasets.items() if ds for ext in ("csv", "md")]

    @cached_property
    def audit_results(self) -> list[str]:
        """The audit and its grids need the true counterfactuals only the embedded suite knows."""
        if self.paper:
            return []
        return ["results/counterfactual_audit.csv", "results/counterfactual_audit.md",
                *(f"results/figures/counterfactuals_{d}.png" for d in self.datasets), "results/figures/generator_curve.png"]

    def diffusion_checks(self, dataset: str | None = None) -> list[str]:
        """The oracle's check of the diffusion model (one dataset's, or every dataset's): the
        embedded suite's only, since the paper suite has no oracle (and a pretrained model)."""
        if self.paper:
            return []
        return [self.build(layout.DIFFUSION_CHECK, dataset=d) for d in ([dataset] if dataset else self.datasets)]

    def generator_curves(self) -> list[str]:
        """Every dataset's generator curve (quality over guidance scale x inversion depth): the
        embedded suite's only, since it scores against the true counterfactuals."""
        return [] if self.paper else [self.build(GENERATOR_CURVE, dataset=d) for d in self.datasets]

    @cached_property
    def curve_settings(self) -> dict[str, list[float]]:
        """The generator curve's guidance scales and inversion depths, sorted, the config's own
        setting always among them: the figure stars it on a measured point."""
        report, cf = self.config["report"], self.counterfactual
        return {"scales": sorted(float(s) for s in _unique([*report["curve_guidance_scales"], cf["guidance_scale"]])),
                "depths": sorted(float(d) for d in _unique([*report["curve_depths"], cf["inversion_depth"]]))}

    @cached_property
    def shortcut_results(self) -> list[str]:
        return [] if self.paper else ["results/shortcut.csv", "results/shortcut.md", "results/figures/shortcut.png"]

    @cached_property
    def calibration_results(self) -> list[str]:
        """The calibration report: the toy's learners against the real benchmark's known behaviour
        (embedded suite only: the paper suite is the real benchmark, and has no shortcut splits)."""
        return [] if self.paper else ["results/calibration.csv", "results/calibration.md"]

    @property
    def reference(self) -> str:
        """The numbers every run is compared with (maintained with ``dicap record_reference``)."""
        return f"results/reference/{self.config['suite']}.csv"

    def metrics(self, variants: dict[str, list[str]] | list[str]) -> list[str]:
        """Per-seed metrics files of ``variants`` (one list for every dataset, or one per dataset)."""
        per = variants if isinstance(variants, dict) else {d: variants for d in self.datasets}
        return [self.build(layout.METRICS, dataset=d, variant=v, seed=s) for d in self.datasets for v in per[d] for s in self.seeds]

    def shortcut_metrics(self) -> list[str]:
        """Every dataset's main run, and the control datasets' two controls, for every seed."""
        return self.metrics({d: [layout.MAIN, *(CONTROL_VARIANTS if d in self.controls else [])] for d in self.datasets})

    def ablation_inputs(self, ablation: str) -> dict[str, list[str]]:
        """An ablation's metrics, the audits of the variants it generates, and the oracles' reports."""
        variants = self.ablations[ablation]
        generated = [] if ablation in PROMPT_ABLATIONS else [v for v in variants if v != layout.TRUE_CF]
        return {
            "metrics": self.metrics(variants),
            "audits": [self.build(layout.AUDIT, dataset=d, variant=v, seed=s)
                       for d in self.datasets for v in generated for s in self.seeds],
            "oracle_reports": [self.build(layout.ORACLE_REPORT, dataset=d) for d in self.datasets],
        }

    def reproduction_inputs(self, reference_exists: bool | None = None) -> dict[str, str]:
        """Every table the run regenerated, and the suite's reference numbers where there are any."""
        inputs = {"table1": "results/table1.csv", "backbones": "results/backbones.csv"}
        if not self.paper:
            inputs |= {"audit": "results/counterfactual_audit.csv", "shortcut": "results/shortcut.csv"}
        inputs |= {os.path.basename(t).removesuffix(".csv"): t for t in [*self.task_results, *self.transfer_results]
                   if t.endswith(".csv")}
        if os.path.exists(self.reference) if reference_exists is None else reference_exists:
            inputs["reference"] = self.reference
        return inputs

    def figure_runs(self) -> list[tuple[str, str, int]]:
        """(dataset, variant, seed) of the counterfactuals the grids show beside main's: the other
        guidance scales (``report.figure_guidance_scales``), first seed only; the embedded suite's."""
        others = [v for v in self.figure_variants if v != layout.MAIN]
        return [] if self.paper else [(d, v, self.seeds[0]) for d in self.datasets for v in others]

    def artifact_targets(self) -> list[str]:
        """The artifacts DVC caches and shares: data, splits, backbones, counterfactuals, features.

        Everything the workflow writes under these folders for ``all`` is listed (main's files,
        the counterfactual grids' other guidance scales, the shortcut controls' training
        features), so a DVC stage that asks Snakemake for exactly these owns the folders whole,
        and after a pull ``snakemake`` plans no shard or feature job.  The ablations' own
        variants are theirs to recompute (.dvcignore keeps them out).
        """
        b, every = self.build, [*self.datasets, *self.text_datasets]
        data = [layout.DATA_TABLE, layout.DATA_CLASSES] + ([] if self.paper else [layout.DATA_IMAGES])
        models = [layout.CLIP_MODEL, layout.CLIP_REPORT, layout.CLASS_TEXT_FEATURES, layout.DIFFUSION_MODEL,
                  layout.DIFFUSION_REPORT]
        models += [layout.GUIDE_CLASSIFIER] if self.counterfactual["guide"] == "classifier" else []
        models += [] if self.paper else [layout.ORACLE_MODEL, layout.ORACLE_REPORT, layout.DIFFUSION_CHECK]
        main = [(d, layout.MAIN, s) for d in every for s in self.seeds]
        generated = [*main, *self.figure_runs()]
        features = [*main, *((d, v, s) for d in self.controls for v in CONTROL_VARIANTS for s in self.seeds)]
        shard_files = [layout.CF_SHARD_IMAGES, layout.CF_SHARD_TABLE]
        return _unique([  # a cross-dataset target's store is also its own dataset's
            *(b(t, dataset=d) for d in every for t in data),
            *(self.split_path(d, s) for d in [*self.datasets, *self.text_datasets] for s in self.seeds),
            *(self.split_path(d, s, layout.UNBIASED_SHOTS) for d in self.controls for s in self.seeds),
            *(b(t, dataset=d) for d in every for t in models),
            *(b(t, dataset=d, variant=v, seed=s) for d, v, s in generated for t in (layout.CF_IMAGES, layout.CF_TABLE)),
            *(b(layout.TRAIN_FEATURES, dataset=d, variant=v, seed=s) for d, v, s in features),
            *(b(t, dataset=d, variant=v, seed=s, shard=k, shards=self.shards(d))
              for d, v, s in generated for k in range(self.shards(d)) for t in shard_files),
            *(b(layout.EVAL_FEATURES, dataset=d) for d in every),
            *self.transfer_artifacts(),
        ])

    def transfer_artifacts(self) -> list[str]:
        """The embedded suite's transfer targets, which ``all`` scores: the shifted renders, the
        other worlds' stores, and each target's features.  Artifacts too, so that after a pull no
        render or encoding job runs."""
        if self.paper:
            return []
        runs = {(d, t) for table in layout.TRANSFER_TABLES for d, _, t in self.transfer_runs(table)}
        return _unique(path for d, t in sorted(runs) for path in
                       (*self.target_store(d, t), self.build(layout.TARGET_FEATURES, dataset=d, target=t)))
    # --- transfer: domain generalization and cross-dataset -----------------------------------

    def transfer_runs(self, table: str) -> list[tuple[str, str, str]]:
        """(source dataset, variant, target) of every evaluation a transfer table reads.

        Paper suite: prompts learned on every class of ``transfer.source`` (the all_classes
        variant, CoCoOp's protocol), scored on the source's own test split and each configured
        target, where the source is one of ``datasets`` (a study of other datasets transfers nothing).
        Embedded suite: each dataset's Table 1 prompts, and the control datasets' true-counterfactual
        ones (the positive control), on the dataset's own shifted renders (domain generalization),
        and on its own unbiased test split and every other world its CLIP pretrained on
        (cross-dataset: ``clip.pretrain_with``; a CLIP scores only the classes it has read captions of).
        """
        if table not in layout.TRANSFER_TABLES:
            raise ValueError(f"unknown transfer table {table!r}; known: {', '.join(layout.TRANSFER_TABLES)}")
        transfer = self.config["transfer"]
        if self.paper:
            source = transfer["source"]  # its own test split first: the source column of the papers' tables
            targets = _unique([source, *transfer[table]]) if transfer[table] and source in self.datasets else []
            return [(source, layout.ALL_CLASSES, target) for target in targets]
        return [(d, v, t) for d in self.datasets for v in (layout.MAIN, *([layout.TRUE_CF] if d in self.controls else []))
                for t in self._embedded_targets(table, d)]

    def _embedded_targets(self, table: str, dataset: str) -> list[str]:
        """An embedded dataset's transfer targets: its shifted renders (domain generalization), or
        its own test split and each other world its CLIP pretrained on (cross-dataset)."""
        if table == "domain_generalization":
            return [layout.SHIFTS] if self.config["transfer"]["shifts"] else []
        others = self.pretrained_with(dataset)
        return [dataset, *others] if others else []

    def transfer_metrics(self, table: str) -> list[str]:
        """Per-seed transfer metrics of every run of ``table`` (:meth:`transfer_runs`)."""
        return [self.build(layout.TRANSFER_METRICS, dataset=d, variant=v, target=t, seed=s)
                for d, v, t in self.transfer_runs(table) for s in self.seeds]

    @cached_property
    def transfer_results(self) -> list[str]:
        """The transfer tables ``all`` makes: those with at least one run (:meth:`transfer_runs`)."""
        return [f"{path}.{ext}" for table, path in layout.TRANSFER_TABLES.items() if self.transfer_runs(table)
                for ext in ("csv", "md")]

    def target_store(self, dataset: str, target: str) -> list[str]:
        """The store files a transfer target is scored on: ``dataset``'s shifted renders
        (:data:`layout.SHIFTS`), or the target dataset's own store."""
        if target == layout.SHIFTS:
            return [self.build(t, dataset=dataset) for t in (layout.SHIFTED_TABLE, layout.SHIFTED_CLASSES, layout.SHIFTED_IMAGES)]
        files = [layout.DATA_TABLE, layout.DATA_CLASSES] + ([] if self.paper else [layout.DATA_IMAGES])
        return [self.build(t, dataset=target) for t in files]


def _unique(values) -> list:
    """``values`` in order, each once."""
    return list(dict.fromkeys(values))
