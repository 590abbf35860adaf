"""Where every artifact lives and what each counterfactual variant is called: one owner.

The rules (``rules/common.smk``) build their paths from these templates, the jobs and the
reports parse paths back with :func:`parse`, and the benchmarks name their targets with
them, so the build tree's contract is written once.  The variant names are made here
(:func:`guidance_variant`, :func:`sampling_variant`) and read back here
(:func:`parse_variant`, :func:`variant_settings`), and a value that would not survive the
trip through a folder name is refused when the name is made.

Templates use Snakemake's ``{wildcard}`` syntax and are relative to the build folder,
``build/<suite>`` (:class:`Build` puts them there).  This module imports nothing from the
package: it sits at the bottom of the import graph, beside ``config`` and ``io``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

BUILD = "build/{suite}"

# The dataset store (prepare_dataset): a table, the class list and, for rendered data, the images.
STORE_TABLE = "factors.parquet"
STORE_CLASSES = "classes.json"
STORE_IMAGES = "images.safetensors"
STORE_TEXTS = "texts.parquet"  # a retrieval dataset's captions (data/text_store.py)
DATA = "data/{dataset}"
DATA_TABLE = f"{DATA}/{STORE_TABLE}"
DATA_CLASSES = f"{DATA}/{STORE_CLASSES}"
DATA_IMAGES = f"{DATA}/{STORE_IMAGES}"

# The few-shot file carries a hash of the parameters that drew it: other shots are another file.
SPLIT = "splits/{dataset}/seed{seed}-{split_key}.parquet"

# Each backbone writes its model folder and, beside it, the files other stages read.
CLIP_MODEL = "models/{dataset}/clip/model"
CLIP_REPORT = "models/{dataset}/clip/report.json"
CLASS_TEXT_FEATURES = "models/{dataset}/clip/class_text_features.safetensors"
DIFFUSION_MODEL = "models/{dataset}/diffusion/model"
DIFFUSION_REPORT = "models/{dataset}/diffusion/report.json"
DIFFUSION_CHECK = "models/{dataset}/diffusion/check.json"  # the oracle's reading of its samples (embedded suite)
GUIDE_CLASSIFIER = "models/{dataset}/guide_classifier"
ORACLE_MODEL = "models/{dataset}/oracle/model"
ORACLE_REPORT = "models/{dataset}/oracle/report.json"
# The rules' folder outputs (Snakemake's ``directory()``): Snakemake rebuilds a missing folder,
# never a file missing from one.
FOLDER_OUTPUTS = (CLIP_MODEL, DIFFUSION_MODEL, GUIDE_CLASSIFIER, ORACLE_MODEL)

COUNTERFACTUALS = "counterfactuals/{dataset}/{variant}/seed{seed}"
CF_SHARD_IMAGES = f"{COUNTERFACTUALS}/shard{{shard}}-of-{{shards}}.safetensors"
CF_SHARD_TABLE = f"{COUNTERFACTUALS}/shard{{shard}}-of-{{shards}}.parquet"
CF_IMAGES = f"{COUNTERFACTUALS}/counterfactuals.safetensors"
CF_TABLE = f"{COUNTERFACTUALS}/counterfactuals.parquet"

TRAIN_FEATURES = "features/{dataset}/{variant}/seed{seed}.safetensors"
EVAL_FEATURES = "features/{dataset}/eval.safetensors"
PROMPT = "prompts/{dataset}/{variant}/{method}/seed{seed}.safetensors"
PROMPT_HISTORY = "prompts/{dataset}/{variant}/{method}/seed{seed}.json"
METRICS = "metrics/{dataset}/{variant}/seed{seed}.csv"
AUDIT = "audit/{dataset}/{variant}/seed{seed}.parquet"

# Transfer (results/domain_generalization, results/cross_dataset): a source dataset's prompts
# scored unchanged on a target store, encoded by the source's CLIP.  A target is another
# dataset's store (paper suite) or SHIFTS, the embedded dataset's own renders under unseen
# factor values (prepare_shifts), one test split per shift, in a store of its own beside the
# dataset's (so DVC's data folder holds both).
SHIFTS = "shifts"
SHIFTED = "data/{dataset}/shifts"
SHIFTED_TABLE = f"{SHIFTED}/{STORE_TABLE}"
SHIFTED_CLASSES = f"{SHIFTED}/{STORE_CLASSES}"
SHIFTED_IMAGES = f"{SHIFTED}/{STORE_IMAGES}"
TARGET_FEATURES = "features/{dataset}/targets/{target}.safetensors"
TRANSFER_METRICS = "transfer/{dataset}/{variant}/{target}/seed{seed}.csv"
TRANSFER_TABLES = {"domain_generalization": "results/domain_generalization", "cross_dataset": "results/cross_dataset"}

# The text tasks (retrieval, VQA): one context per method and seed, one metrics file per seed.
TASK_PROMPT = "tasks/{task}/prompts/{dataset}/{method}/seed{seed}.safetensors"
TASK_METRICS = "tasks/{task}/metrics/{dataset}/seed{seed}.csv"
TASK_TABLES = {"retrieval": "results/table2", "vqa": "results/table3"}  # + .csv / .md

# Logs and Snakemake benchmark files, per rule: logs/<rule>/<wildcards...>.log
LOGS = "logs"
BENCHMARKS = "logs/benchmarks"

# What each wildcard may hold when a path is read back.
WILDCARD_PATTERNS = {"seed": r"\d+", "shard": r"\d+", "shards": r"\d+", "task": "|".join(TASK_TABLES)}
_WILDCARD = re.compile(r"\{(\w+)\}")

# Variants: config.yaml's counterfactual settings with at most one change.
MAIN = "main"  # config's own settings: Table 1
TRUE_CF = "true_cf"  # main's targets, but the true counterfactuals the SCM renders (the positive control)
UNBIASED_SHOTS = "unbiased_shots"  # CoOp on an unbiased draw of the shots: no counterfactuals (the negative control)
# Every class of the dataset trains (the cross-dataset / domain-generalisation recipe since CoCoOp),
# not only the base half; it draws its own counterfactuals, y_cf among every class.
ALL_CLASSES = "all_classes"
GUIDANCE_PREFIX = "guidance_scale"  # guidance_scale<value>: another guidance scale (the paper's s)
SAMPLING_PREFIX = "sample_"  # sample_<strategy>: another way of choosing y_cf
GENERATED_VARIANTS = rf"main|{ALL_CLASSES}|guidance_scale\d+(\.\d+)?|sample_[a-z]+"  # variants that generate counterfactuals
# Prompt variants: main's counterfactuals, one change to the prompt training (ablation_context, ablation_loss).
CONTEXT_PREFIX = "ctx"  # ctx<n>: n context tokens, initialised at random (N(0, 0.02^2)) for every length
# cfw<value>, cft<value>, cfp<value>: the hard negative's weight and temperature, the labelled counterfactual's weight
LOSS_PREFIXES = {"cfw": "cf_weight", "cft": "cf_temperature", "cfp": "cf_positive_weight"}
PROMPT_VARIANTS = r"ctx\d+|cf[wtp]\d+(\.\d+)?"
VARIANTS = rf"{TRUE_CF}|{UNBIASED_SHOTS}|{GENERATED_VARIANTS}|{PROMPT_VARIANTS}"


def fill(template: str, **wildcards: Any) -> str:
    """``template`` with the given wildcards filled in; the others stay ``{name}``."""
    return _WILDCARD.sub(lambda m: str(wildcards[m.group(1)]) if m.group(1) in wildcards else m.group(0), template)


@dataclass(frozen=True)
class Build:
    """A suite's build folder: ``Build("embedded")(CLIP_MODEL, dataset="shapes")``."""

    suite: str

    @property
    def root(self) -> str:
        return fill(BUILD, suite=self.suite)

    def __call__(self, template: str, **wildcards: Any) -> str:
        return f"{self.root}/{fill(template, **wildcards)}"


def _regex(template: str) -> re.Pattern[str]:
    parts, last = [], 0
    for m in _WILDCARD.finditer(template):
        parts += [re.escape(template[last : m.start()]), f"(?P<{m.group(1)}>{WILDCARD_PATTERNS.get(m.group(1), r'[^/]+')})"]
        last = m.end()
    parts.append(re.escape(template[last:]))
    return re.compile(r"(?:^|/)" + "".join(parts) + "$")


def parse(template: str, path: str | Path) -> dict[str, str]:
    """The wildcards of ``path``, which must end with ``template``'s shape; else ValueError."""
    match = _regex(template).search(Path(path).as_posix())
    if match is None:
        raise ValueError(f"{path} does not follow {template}")
    return match.groupdict()


def folder_output(path: str | Path) -> Path | None:
    """The folder output (:data:`FOLDER_OUTPUTS`) that ``path`` lies inside, if any."""
    path = Path(path)
    for parent in reversed(path.parents):
        if any(_regex(template).search(parent.as_posix()) for template in FOLDER_OUTPUTS):
            return parent
    return None


class SeedKey(NamedTuple):
    """What a per-seed artifact is: its dataset, variant and seed."""

    dataset: str
    variant: str
    seed: int


def seed_key(template: str, path: str | Path, datasets: list[str] | None = None) -> SeedKey:
    """``.../<dataset>/<variant>/seed<k>.<ext>`` -> its key; the path is the one source of truth."""
    found = parse(template, path)
    if datasets is not None and found["dataset"] not in datasets:
        raise ValueError(f"{path}: dataset {found['dataset']!r} is not one of {datasets}")
    return SeedKey(found["dataset"], found["variant"], int(found["seed"]))


def by_dataset(template: str, paths: list[Path], datasets: list[str]) -> dict[str, Path]:
    """One file per dataset (``models/<dataset>/...``), keyed by the dataset its path names."""
    found = {parse(template, p)["dataset"]: Path(p) for p in paths}
    missing = [d for d in datasets if d not in found]
    if missing:
        raise ValueError(f"no {template} for datasets {missing} among {[str(p) for p in paths]}")
    return found


# How a wildcard appears in a log or benchmark path (``{name}`` unless listed).
_LOG_PARTS = {"seed": "seed{seed}", "shard": "shard{shard}-of-{shards}"}


def log_path(rule: str, *wildcards: str) -> str:
    """``logs/<rule>/<wildcard parts>.log``: ``log_path("make_split", "dataset", "seed")``."""
    return "/".join([LOGS, rule, *(_LOG_PARTS.get(w, f"{{{w}}}") for w in wildcards)]) + ".log"


def benchmark_path(rule: str, *wildcards: str) -> str:
    """``logs/benchmarks/<rule>/<wildcard parts>.tsv``, read back by :func:`benchmark_rule`."""
    return "/".join([BENCHMARKS, rule, *(_LOG_PARTS.get(w, f"{{{w}}}") for w in wildcards)]) + ".tsv"


def benchmark_rule(path: Path, root: Path) -> str:
    """The rule a benchmark file under ``root`` (``logs/benchmarks``) belongs to."""
    return path.relative_to(root).parts[0].removesuffix(".tsv")


@dataclass(frozen=True)
class Variant:
    """The one change a variant makes to config's counterfactual settings (none for main)."""

    guidance_scale: float | None = None
    sampling: str | None = None
    true_cf: bool = False
    unbiased_shots: bool = False
    all_classes: bool = False  # trains on every class, not the base half (the cross-dataset recipe)
    prompt: tuple[tuple[str, Any], ...] = ()  # a prompt variant's change to config's prompt block

    @property
    def prompt_overrides(self) -> dict[str, Any]:
        return dict(self.prompt)

    @property
    def counterfactuals(self) -> str:
        """What the variant trains on: ``generated``, ``true`` or ``none`` counterfactuals."""
        return "true" if self.true_cf else "none" if self.unbiased_shots else "generated"

    @property
    def classes(self) -> str:
        """Which classes the variant's shots hold and its prompts learn: ``base`` or ``all``."""
        return "all" if self.all_classes else "base"


def parse_variant(name: str) -> Variant:
    """A variant's name -> its change; the inverse of :func:`guidance_variant` and :func:`sampling_variant`."""
    if name == MAIN:
        return Variant()
    if name == TRUE_CF:
        return Variant(true_cf=True)
    if name == UNBIASED_SHOTS:
        return Variant(unbiased_shots=True)
    if name == ALL_CLASSES:
        return Variant(all_classes=True)
    if name.startswith(SAMPLING_PREFIX) and re.fullmatch(r"[a-z]+", name.removeprefix(SAMPLING_PREFIX)):
        return Variant(sampling=name.removeprefix(SAMPLING_PREFIX))
    if name.startswith(GUIDANCE_PREFIX) and re.fullmatch(r"\d+(\.\d+)?", name.removeprefix(GUIDANCE_PREFIX)):
        return Variant(guidance_scale=float(name.removeprefix(GUIDANCE_PREFIX)))
    if name.startswith(CONTEXT_PREFIX) and re.fullmatch(r"[1-9]\d*", name.removeprefix(CONTEXT_PREFIX)):
        return Variant(prompt=(("n_ctx", int(name.removeprefix(CONTEXT_PREFIX))), ("ctx_init", None)))
    for prefix, key in LOSS_PREFIXES.items():
        if name.startswith(prefix) and re.fullmatch(r"\d+(\.\d+)?", name.removeprefix(prefix)):
            return Variant(prompt=((key, float(name.removeprefix(prefix))),))
    raise ValueError(f"unknown variant {name!r}: expected {MAIN}, {TRUE_CF}, {UNBIASED_SHOTS}, {ALL_CLASSES}, "
                     f"{GUIDANCE_PREFIX}<guidance scale>, "
                     f"{SAMPLING_PREFIX}<strategy>, {CONTEXT_PREFIX}<context length> or "
                     f"{'/'.join(LOSS_PREFIXES)}<counterfactual loss weight/temperature/positive weight>")


def guidance_variant(guidance_scale: float, counterfactual: dict[str, Any]) -> str:
    """The variant generating with ``guidance_scale`` (``main`` for config's own)."""
    value = float(guidance_scale)
    if value == float(counterfactual["guidance_scale"]):
        return MAIN
    return _numbered(GUIDANCE_PREFIX, value, "guidance scale", lambda v: v.guidance_scale)


def context_variant(n_ctx: int) -> str:
    """The variant training with ``n_ctx`` randomly initialised context tokens (never main: main's are words)."""
    if isinstance(n_ctx, bool) or int(n_ctx) != n_ctx or n_ctx < 1:
        raise ValueError(f"context length {n_ctx!r} is not a whole number of tokens, 1 or more")
    return f"{CONTEXT_PREFIX}{int(n_ctx)}"


def loss_variant(key: str, value: float, prompt: dict[str, Any]) -> str:
    """The variant training DiCap's terms with ``key`` (cf_weight, cf_temperature or cf_positive_weight) = ``value``
    (``main`` for config's own)."""
    prefix = {k: p for p, k in LOSS_PREFIXES.items()}[key]
    value = float(value)
    if value == float(prompt[key]):
        return MAIN
    return _numbered(prefix, value, key, lambda v: v.prompt_overrides.get(key))


def _numbered(prefix: str, value: float, what: str, read_back) -> str:
    """``<prefix><value>``, refused unless it parses back to exactly ``value``."""
    name = f"{prefix}{value:g}"
    if not math.isfinite(value) or not re.fullmatch(VARIANTS, name) or read_back(parse_variant(name)) != value:
        raise ValueError(f"{what} {value!r} has no variant name that reads back as the same number "
                         "(use at most 6 significant digits, no exponent)")
    return name


def sampling_variant(sampling: str, counterfactual: dict[str, Any]) -> str:
    """The variant choosing ``y_cf`` by ``sampling`` (``main`` for config's own)."""
    return MAIN if sampling == counterfactual["sampling"] else f"{SAMPLING_PREFIX}{sampling}"


def variant_settings(name: str, counterfactual: dict[str, Any]) -> dict[str, Any]:
    """Config's counterfactual block with variant ``name``'s one change applied."""
    variant = parse_variant(name)
    if variant.counterfactuals != "generated" or variant.prompt:
        raise ValueError(f"variant {name!r} generates no counterfactuals (it trains on main's or none)")
    settings = dict(counterfactual)
    if variant.guidance_scale is not None:
        settings["guidance_scale"] = variant.guidance_scale
    if variant.sampling is not None:
        settings["sampling"] = variant.sampling
    if variant.all_classes:  # y_cf among every class (counterfactual_shard); main's settings keep no such key
        settings["classes"] = variant.classes
    return settings


def generated_variant(name: str) -> str:
    """The variant whose counterfactual files ``name`` trains on (``true_cf`` and prompt variants reuse main's)."""
    variant = parse_variant(name)
    return MAIN if variant.true_cf or variant.prompt else name
