# Paths shared by the rules, all made by src/dicap/layout.py, the one owner of the build tree's
# names: the jobs and reports read paths back with the same module.
#
# Each rule of rules/X.smk runs `dicap <its own name>`, the function of that name in src/dicap/jobs/X.py, and
# gets `code=code_version("<its own name>")` among its params: a hash of the Python source that
# job runs (src/dicap/code_version.py).  Snakemake reruns a job whose params changed, so editing
# src/dicap/prompting/losses.py reruns prompt training and what follows, and leaves the data,
# backbones and counterfactuals alone.
#
# Counterfactual-dependent artifacts carry a {variant} of the counterfactual settings
# (layout.py makes and reads the names):
#   main           - config.yaml's counterfactual block as it is (Table 1 uses it)
#   guidance_scale<value> - the same with another guidance scale (ablation_guidance_scale, figures)
#   sample_<name>  - the same with another y_cf sampling strategy (ablation_sampling)
#   true_cf        - main's targets, but the *true* counterfactuals (the positive control; ablation_true_cf)
#   unbiased_shots - CoOp on an unbiased draw of the shots, no counterfactuals (the negative control)
#   ctx<n>         - main's counterfactuals, n context tokens initialised at random (ablation_context)
#   cfw<w>, cft<t>, cfp<w> - main's counterfactuals, one DiCap loss weight or temperature changed (ablation_loss)

PLAN = Plan(config)  # the study's grid (src/dicap/plan.py): the names below only read it
B = PLAN.build
log_path, bench_path = layout.log_path, layout.benchmark_path
COUNTERFACTUAL = config["counterfactual"]
DATA = B(layout.DATA)
# The paper suite's images stay the downloaded files (under data.root); the embedded suite's
# rendered ones live in one safetensors file.
DATA_FILES = [B(layout.DATA_TABLE), B(layout.DATA_CLASSES)] + ([] if PAPER else [B(layout.DATA_IMAGES)])
# The few-shot file is keyed by a hash of the parameters that draw it (CoOp keys its cache by
# shots and seed only, and silently reuses a stale one): other shots are another file.
SPLIT_PARAMS_BY_KEY = PLAN.split_params_by_key
SPLIT = B(layout.SPLIT, split_key=PLAN.split_keys["shots"])
# Retrieval and VQA (Tables 2, 3): the embedded suite scores them on its classification
# datasets (their shots, features and counterfactuals); the paper suite on datasets of their
# own (Flickr30k, MSCOCO, VQAv2), each drawing `tasks.percent` % of its pool for training.
TASK_DATASETS, TEXT_DATASETS = PLAN.task_datasets, PLAN.text_datasets
CLIP = B(layout.CLIP_MODEL)
CLIP_REPORT = B(layout.CLIP_REPORT)
CLASS_TEXT_FEATURES = B(layout.CLASS_TEXT_FEATURES)
DIFFUSION = B(layout.DIFFUSION_MODEL)
DIFFUSION_REPORT = B(layout.DIFFUSION_REPORT)
GUIDE_CLASSIFIER = B(layout.GUIDE_CLASSIFIER)
ORACLE = B(layout.ORACLE_MODEL)
ORACLE_REPORT = B(layout.ORACLE_REPORT)
CF_SHARD_IMAGES = B(layout.CF_SHARD_IMAGES)
CF_SHARD_TABLE = B(layout.CF_SHARD_TABLE)
CF_IMAGES = B(layout.CF_IMAGES)
CF_TABLE = B(layout.CF_TABLE)
TRAIN_FEATURES = B(layout.TRAIN_FEATURES)
EVAL_FEATURES = B(layout.EVAL_FEATURES)
PROMPT = B(layout.PROMPT)
PROMPT_HISTORY = B(layout.PROMPT_HISTORY)
METRICS = B(layout.METRICS)
AUDIT = B(layout.AUDIT)
TASK_PROMPT = B(layout.TASK_PROMPT)
TASK_METRICS = B(layout.TASK_METRICS)
TASK_METHODS = config["tasks"]["methods"]
AUDIT_RESULTS, SHORTCUT_RESULTS, TASK_RESULTS = PLAN.audit_results, PLAN.shortcut_results, PLAN.task_results
CALIBRATION_RESULTS = PLAN.calibration_results
TRANSFER_RESULTS = PLAN.transfer_results  # results/domain_generalization, results/cross_dataset (rules/transfer.smk)
SOURCE_READY = os.path.join(config["data"].get("root", "data"), "{dataset}", "READY.json")  # paper suite: a download
ABLATIONS = PLAN.ablations  # the ablations by name (`snakemake ablation_<name>`): the variants each compares


def dataset_source(wildcards):
    """The paper suite prepares a dataset from its download; the embedded suite renders it."""
    return {"source": SOURCE_READY.format(dataset=wildcards.dataset)} if PAPER else {}


clip_params, by_suite = PLAN.clip_params, PLAN.by_suite


def grow_with_attempt(mem_mb):
    """Memory that doubles with each retry (``retries:`` in the profile), for the GPU-sized jobs."""
    return lambda wildcards, attempt: budget.retried(mem_mb, attempt)


def dataset_dir(wildcards, input):
    """The dataset store's directory, derived from the rule's ``data`` input files."""
    return os.path.dirname(input.data[0])


def other_worlds(wildcards):
    """The store files of the other worlds a dataset's CLIP also pretrains on (clip.pretrain_with)."""
    return [B(f, dataset=d) for d in PLAN.pretrained_with(wildcards.dataset)
            for f in (layout.DATA_TABLE, layout.DATA_CLASSES, layout.DATA_IMAGES)]


def other_worlds_option(wildcards, input):
    """``--pretrain-with <store dir>...`` for clip_backbone, derived from its inputs; empty without any."""
    dirs = dict.fromkeys(map(os.path.dirname, input.pretrain_with))
    return " ".join(["--pretrain-with", *dirs]) if dirs else ""


def guide_inputs(wildcards):
    """The noise-aware classifier is an input only when the 'classifier' guide is chosen."""
    if COUNTERFACTUAL["guide"] == "classifier":
        return {"classifier": GUIDE_CLASSIFIER.format(dataset=wildcards.dataset)}
    return {}


def split_of(wildcards):
    """The few-shot split a job reads (a text dataset's, the negative control's, or the shots)."""
    return PLAN.split_path(wildcards.dataset, wildcards.seed, getattr(wildcards, "variant", layout.MAIN))


def data_params(wildcards):
    return as_json(PLAN.data_params(wildcards.dataset))


def cf_source(wildcards):
    """The merged counterfactuals a variant trains on (main's for true_cf, none for the negative control)."""
    variant = PLAN.counterfactual_variant(wildcards.variant, wildcards.dataset)
    if variant is None:
        return {}
    fill = dict(dataset=wildcards.dataset, seed=wildcards.seed, variant=variant)
    return {"images": CF_IMAGES.format(**fill), "table": CF_TABLE.format(**fill)}


variant_methods, training_params = PLAN.variant_methods, PLAN.training_params


def features_of(wildcards):
    """The cached training features: a prompt variant reuses main's (same shots, same counterfactuals)."""
    return TRAIN_FEATURES.format(dataset=wildcards.dataset, variant=PLAN.features_variant(wildcards.variant), seed=wildcards.seed)


def learner_size(embedded_mb, paper_mb):
    """Memory per learner (its registry entry's factor), doubling with each retry."""
    return lambda wc, attempt: PLAN.learner_memory_mb(wc.method, embedded_mb, paper_mb, attempt)


def learner_runtime(wc, attempt):
    """Minutes per learner on the cluster: its budget (src/dicap/budget.py) on the classes its
    variant learns (a text task has none: main), doubling with each retry."""
    return PLAN.learner_minutes(wc.method, wc.dataset, attempt, wc.get("variant", layout.MAIN))


def learner_gpus(wc):
    """A method that learns nothing (zeroshot) asks for no GPU."""
    return PLAN.learner_gpus(wc.method)


def shard_runtime(wc, attempt):
    """Minutes per counterfactual shard: its budget on the paper suite, doubling with each retry."""
    return PLAN.shard_minutes(wc.dataset, attempt, wc.variant)


def shard_files(wildcards):
    """Every shard of one dataset's counterfactuals: as many as its variant's image count asks for (Plan.shards)."""
    n = PLAN.shards(wildcards.dataset, wildcards.variant)
    fill = dict(dataset=wildcards.dataset, variant=wildcards.variant, seed=wildcards.seed, shards=n)
    return {"images": [CF_SHARD_IMAGES.format(shard=k, **fill) for k in range(n)],
            "tables": [CF_SHARD_TABLE.format(shard=k, **fill) for k in range(n)]}


def pixel_inputs(wildcards):
    """A learner that runs the vision tower itself (MaPLe) reads the shots and counterfactuals as images."""
    if not PLAN.reads_pixels(wildcards.method):
        return {}
    return {"split": split_of(wildcards), **cf_source(wildcards)}


shortcut_metrics, ablation_inputs, artifact_targets = PLAN.shortcut_metrics, PLAN.ablation_inputs, PLAN.artifact_targets


def figure_runs(wildcards):
    fill = dict(dataset=wildcards.dataset, seed=SEEDS[0])
    return {
        "images": [CF_IMAGES.format(variant=v, **fill) for v in PLAN.figure_variants],
        "audits": [AUDIT.format(variant=v, **fill) for v in PLAN.figure_variants],
    }


def reproduction_inputs(wildcards):
    """Every table the run regenerated, and the suite's reference numbers where there are any."""
    return PLAN.reproduction_inputs()


TABLE_TASK = {os.path.basename(table): task for task, table in layout.TASK_TABLES.items()}  # table2 -> retrieval


def task_datasets(table):
    """The datasets a task table covers: refused before any job when the config gives it none."""
    task = TABLE_TASK[table]
    if not TASK_DATASETS[task]:
        raise WorkflowError(f"results/{table} needs {task} datasets: set tasks.datasets.{task} (config.paper.yaml lists them)")
    return TASK_DATASETS[task]


def diffusion_check_of(wildcards):
    """Embedded suite: the oracle's check of the diffusion model, which a shard refuses to run
    without passing.  A plain input, not ancient(): a rerun check then reruns the shards (a
    minute on the embedded suite), but Snakemake 9.27 defers the params check of a job whose
    ancient() input is being rebuilt, so one `snakemake artifacts` left stale shards behind
    for the next, and DVC recorded them as current (docs/dvc.md)."""
    return {"check": path for path in PLAN.diffusion_checks(wildcards.dataset)}


# --- transfer (rules/transfer.smk) ---


def target_store(wildcards):
    """The target's store files: another dataset's, or the source's shifted renders (layout.SHIFTS)."""
    return PLAN.target_store(wildcards.dataset, wildcards.target)


def transfer_metrics(table):
    """A transfer table's per-seed files, refused before any job when the config gives it none."""
    files = PLAN.transfer_metrics(table)
    if files:
        return files
    if PAPER:
        remedy = (f"set transfer.{table} (config.paper.yaml lists the protocol's targets), and list transfer.source "
                  f"({config['transfer']['source']}) among datasets")
    elif table == "cross_dataset":
        remedy = ("set clip.pretrain_with for one of datasets (a dataset's CLIP is scored on the other worlds it "
                  "pretrained on, e.g. {digits: [shapes]})")
    else:
        remedy = "set transfer.shifts"
    raise WorkflowError(f"results/{table} has nothing to score: {remedy}")
