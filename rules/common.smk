# Paths shared by the rules, all made by src/dicap/layout.py, the one owner of the build tree's
# names: the jobs and reports read paths back with the same module.
#
# Each rule runs `dicap <its own name>`, the function of that name in its stage's jobs.py, and
# gets `code=code_version("<its own name>")` among its params: a hash of the Python source that
# job runs (src/dicap/code_version.py).  Snakemake reruns a job whose params changed, so editing
# src/dicap/prompting/losses.py reruns prompt training and what follows, and leaves the data,
# backbones and counterfactuals alone.
#
# Counterfactual-dependent artifacts carry a {variant} of the counterfactual settings
# (layout.py makes and reads the names):
#   main           - config.yaml's counterfactual block as it is (Table 1 uses it)
#   s<value>       - the same with guidance scale s = <value> (ablation_guidance_scale, figures)
#   sample_<name>  - the same with another y_cf sampling strategy (ablation_sampling)
#   true_cf        - main's targets, but the *true* counterfactuals (the positive control; ablation_true_cf)
#   unbiased_shots - CoOp on an unbiased draw of the shots, no counterfactuals (the negative control)
#   ctx<n>         - main's counterfactuals, n context tokens initialised at random (ablation_context)
#   cfw<w>, cft<t> - main's counterfactuals, DiCap's loss weight or temperature changed (ablation_loss)

B = layout.Build(config["suite"])
log_path, bench_path = layout.log_path, layout.benchmark_path
COUNTERFACTUAL = config["counterfactual"]
DATA = B(layout.DATA)
# The paper suite's images stay the downloaded files (under data.root); the embedded suite's
# rendered ones live in one safetensors file.
DATA_FILES = [B(layout.DATA_TABLE), B(layout.DATA_CLASSES)] + ([] if PAPER else [B(layout.DATA_IMAGES)])
# The few-shot file is keyed by a hash of the parameters that draw it (CoOp keys its cache by
# shots and seed only, and silently reuses a stale one): other shots are another file.
SPLIT_PARAMS = {k: config["data"][k] for k in ("shots", "val_shots" if PAPER else "spurious_strength")}
# The negative control's shots: the same number, drawn without the background bias.
UNBIASED_SPLIT_PARAMS = {"shots": config["data"]["shots"], "spurious_strength": None}
# Retrieval and VQA (Tables 2, 3): the embedded suite scores them on its classification
# datasets (their shots, features and counterfactuals); the paper suite on datasets of their
# own (Flickr30k, MSCOCO, VQAv2), each drawing `tasks.percent` % of its pool for training.
TASK_DATASETS = {t: config["tasks"]["datasets"].get(t, []) if PAPER else DATASETS for t in layout.TASK_TABLES}
TEXT_DATASETS = sorted({d for ds in TASK_DATASETS.values() for d in ds} - set(DATASETS))  # stores of their own
TEXT_SPLIT_PARAMS = {"percent": config["tasks"]["percent"]}
SPLIT_PARAMS_BY_KEY = {params_hash(p)[:10]: p for p in (SPLIT_PARAMS, UNBIASED_SPLIT_PARAMS, TEXT_SPLIT_PARAMS)}
SPLIT = B(layout.SPLIT, split_key=params_hash(SPLIT_PARAMS)[:10])
UNBIASED_SPLIT = B(layout.SPLIT, split_key=params_hash(UNBIASED_SPLIT_PARAMS)[:10])
TEXT_SPLIT = B(layout.SPLIT, split_key=params_hash(TEXT_SPLIT_PARAMS)[:10])
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
# The audit and its grids need the true counterfactuals only the embedded suite knows.
AUDIT_RESULTS = [] if PAPER else ["results/counterfactual_audit.csv", *expand("results/figures/counterfactuals_{dataset}.png", dataset=DATASETS)]
# The numbers every run is compared with (results/reproduction.md); a suite without one gets
# a comparison that says so.  Maintained with `dicap record-reference`, never a workflow output.
REFERENCE = f"results/reference/{config['suite']}.csv"
# The shortcut controls (results/shortcut.csv) run on the configured datasets among `controls`;
# the paper suite has no shortcut splits and no true counterfactuals.
CONTROLS = [] if PAPER else [d for d in config["controls"] if d in DATASETS]
CONTROL_VARIANTS = [layout.UNBIASED_SHOTS, layout.TRUE_CF]
SHORTCUT_RESULTS = [] if PAPER else ["results/shortcut.csv", "results/shortcut.md", "results/figures/shortcut.png"]
COUNTERFACTUAL_METHODS = [m for m in METHODS if parse_method(m).uses_counterfactuals] or ["dicap"]
SOURCE_READY = os.path.join(config["data"].get("root", "data"), "{dataset}", "READY.json")  # paper suite: a download
# The ablations by name (`snakemake ablation_<name>`): the variants each compares, main included.
ABLATIONS = {
    "guidance_scale": list(dict.fromkeys(layout.guidance_variant(s, COUNTERFACTUAL)
                                         for s in [*config["ablations"]["guidance_scales"], COUNTERFACTUAL["guidance_scale"]])),
    "sampling": list(dict.fromkeys(layout.sampling_variant(s, COUNTERFACTUAL) for s in config["ablations"]["samplings"])),
    "true_cf": [layout.MAIN, layout.TRUE_CF],
    "context": [layout.context_variant(n) for n in config["ablations"]["n_ctxs"]],
    "loss": list(dict.fromkeys(
        [layout.MAIN]
        + [layout.loss_variant("cf_weight", w, config["prompt"]) for w in config["ablations"]["cf_weights"]]
        + [layout.loss_variant("cf_temperature", t, config["prompt"]) for t in config["ablations"]["cf_temperatures"]])),
}
PROMPT_ABLATIONS = ("context", "loss")  # they change the prompt training only: no audit of their own
# The first seed's main run, then the other guidance scales the counterfactual grids show.
FIGURE_VARIANTS = list(dict.fromkeys([layout.MAIN, *(layout.guidance_variant(s, COUNTERFACTUAL) for s in config["report"]["figure_guidance_scales"])]))


def dataset_source(wildcards):
    """The paper suite prepares a dataset from its download; the embedded suite renders it."""
    return {"source": SOURCE_READY.format(dataset=wildcards.dataset)} if PAPER else {}


def clip_params(dataset):
    """The clip block one dataset's backbone trains with: its own step count where one is set."""
    block = {k: v for k, v in config["clip"].items() if k != "dataset_steps"}
    steps = config["clip"].get("dataset_steps", {}).get(dataset)
    return block | {"train": block["train"] | {"steps": steps}} if steps and not PAPER else block


def by_suite(embedded, paper):
    """A job size per suite: the paper suite's pretrained models and real images are far larger."""
    return paper if PAPER else embedded


def grow_with_attempt(mem_mb):
    """Memory that doubles with each retry (``retries:`` in the profile), for the GPU-sized jobs."""
    return lambda wildcards, attempt: mem_mb * 2 ** (attempt - 1)


def dataset_dir(wildcards, input):
    """The dataset store's directory, derived from the rule's ``data`` input files."""
    return os.path.dirname(input.data[0])


def guide_inputs(wildcards):
    """The noise-aware classifier is an input only when the 'classifier' guide is chosen."""
    if COUNTERFACTUAL["guide"] == "classifier":
        return {"classifier": GUIDE_CLASSIFIER.format(dataset=wildcards.dataset)}
    return {}


def split_of(wildcards):
    """The few-shot split a job reads: a text dataset's share of its pool, the negative
    control's unbiased shots, or the (biased) shots every other variant trains on."""
    if wildcards.dataset in TEXT_DATASETS:
        pattern = TEXT_SPLIT
    else:
        pattern = UNBIASED_SPLIT if getattr(wildcards, "variant", layout.MAIN) == layout.UNBIASED_SHOTS else SPLIT
    return pattern.format(dataset=wildcards.dataset, seed=wildcards.seed)


def data_params(wildcards):
    """The data block a dataset is prepared with; a VQA store also fixes its test questions."""
    extra = {"vqa_test_items": config["tasks"]["vqa_test_items"]} if wildcards.dataset in TEXT_DATASETS else {}
    return as_json(config["data"] | extra)


def cf_source(wildcards):
    """The merged counterfactuals a variant trains on: true_cf reuses main's (their true images);
    the negative control trains on none."""
    if wildcards.variant == layout.UNBIASED_SHOTS:
        return {}
    fill = dict(dataset=wildcards.dataset, seed=wildcards.seed, variant=layout.generated_variant(wildcards.variant))
    return {"images": CF_IMAGES.format(**fill), "table": CF_TABLE.format(**fill)}


def variant_methods(variant):
    """Methods trained per variant: all of them for main, CoOp on the unbiased shots, the
    counterfactual methods on the true counterfactuals, CoOp and DiCap for a context length,
    DiCap with and without the positive term for a loss setting, DiCap alone otherwise."""
    if variant == layout.MAIN:
        return METHODS
    if variant == layout.UNBIASED_SHOTS:
        return ["coop"]
    if variant == layout.TRUE_CF:
        return COUNTERFACTUAL_METHODS
    prompt = layout.parse_variant(variant).prompt_overrides
    if "n_ctx" in prompt:
        return ["coop", "dicap"]
    return ["dicap", "dicap_pos"] if prompt else ["dicap"]


def training_params(method, variant):
    """The parameters ``method`` trains with in ``variant``: its learner's recipe, the variant's change."""
    return method_params(config["prompt"], method, layout.parse_variant(variant).prompt_overrides)


def features_of(wildcards):
    """The cached training features: a prompt variant reuses main's (same shots, same counterfactuals)."""
    variant = layout.MAIN if layout.parse_variant(wildcards.variant).prompt else wildcards.variant
    return TRAIN_FEATURES.format(dataset=wildcards.dataset, variant=variant, seed=wildcards.seed)


def learner_size(embedded_mb, paper_mb):
    """Memory per learner: MaPLe runs the vision tower on every step, CoCoOp and CPL encode
    B x C prompts per step; CoOp and KgCoOp only C."""
    heavy = {"maple": 4, "cocoop": 2, "cpl": 2}
    return lambda wc, attempt: by_suite(embedded_mb, paper_mb * heavy.get(parse_method(wc.method).learner, 1)) * 2 ** (attempt - 1)


def learner_runtime(wc):
    """Minutes per learner on the cluster: the per-image learners take far longer per epoch."""
    return by_suite(30, {"maple": 720, "cocoop": 720, "cpl": 720}.get(parse_method(wc.method).learner, 240))


def pixel_inputs(wildcards):
    """A learner that runs the vision tower itself (MaPLe) reads the shots and counterfactuals as images."""
    if parse_method(wildcards.method).learner not in PIXEL_LEARNERS:
        return {}
    return {"split": split_of(wildcards), **cf_source(wildcards)}


def shortcut_metrics():
    """Every dataset's main run, and the control datasets' two controls, for every seed."""
    variants = {d: [layout.MAIN, *(CONTROL_VARIANTS if d in CONTROLS else [])] for d in DATASETS}
    return [METRICS.format(dataset=d, variant=v, seed=s) for d in DATASETS for v in variants[d] for s in SEEDS]


def figure_runs(wildcards):
    fill = dict(dataset=wildcards.dataset, seed=SEEDS[0])
    return {
        "images": [CF_IMAGES.format(variant=v, **fill) for v in FIGURE_VARIANTS],
        "audits": [AUDIT.format(variant=v, **fill) for v in FIGURE_VARIANTS],
    }


def ablation_inputs(ablation):
    variants = ABLATIONS[ablation]
    generated = [] if ablation in PROMPT_ABLATIONS else [v for v in variants if v != layout.TRUE_CF]
    return {
        "metrics": [METRICS.format(dataset=d, variant=v, seed=s) for d in DATASETS for v in variants for s in SEEDS],
        "audits": expand(AUDIT, dataset=DATASETS, variant=generated, seed=SEEDS),
        "oracle_reports": expand(ORACLE_REPORT, dataset=DATASETS),
    }


def reproduction_inputs(wildcards):
    """Every table the run regenerated, and the suite's reference numbers where there are any."""
    inputs = {"table1": "results/table1.csv", "backbones": "results/backbones.csv"}
    if not PAPER:
        inputs["audit"] = "results/counterfactual_audit.csv"
        inputs["shortcut"] = "results/shortcut.csv"
    inputs |= {os.path.basename(t).removesuffix(".csv"): t for t in TASK_RESULTS if t.endswith(".csv")}  # table2, table3
    if os.path.exists(REFERENCE):
        inputs["reference"] = REFERENCE
    return inputs


def artifact_targets():
    """The artifacts DVC caches and shares: data, splits, backbones, counterfactuals, features.

    Everything the workflow writes under these folders for the main variant is listed, so
    a DVC stage that asks Snakemake for exactly these owns the folders whole.
    """
    models = [CLIP, CLIP_REPORT, CLASS_TEXT_FEATURES, DIFFUSION, DIFFUSION_REPORT]
    models += [GUIDE_CLASSIFIER] if COUNTERFACTUAL["guide"] == "classifier" else []
    models += [] if PAPER else [ORACLE, ORACLE_REPORT]
    every = [*DATASETS, *TEXT_DATASETS]
    return [
        *expand(DATA_FILES, dataset=every),
        *expand(SPLIT, dataset=DATASETS, seed=SEEDS),
        *expand(TEXT_SPLIT, dataset=TEXT_DATASETS, seed=SEEDS),
        *expand(UNBIASED_SPLIT, dataset=CONTROLS, seed=SEEDS),
        *expand(models, dataset=every),
        *expand([CF_IMAGES, CF_TABLE], dataset=every, variant=layout.MAIN, seed=SEEDS),
        *expand([CF_SHARD_IMAGES, CF_SHARD_TABLE], dataset=every, variant=layout.MAIN, seed=SEEDS,
                shard=range(SHARDS), shards=SHARDS),
        *expand(TRAIN_FEATURES, dataset=every, variant=layout.MAIN, seed=SEEDS),
        *expand(EVAL_FEATURES, dataset=every),
    ]


TABLE_TASK = {os.path.basename(table): task for task, table in layout.TASK_TABLES.items()}  # table2 -> retrieval
# The tables a run builds: both on the embedded suite, those of the tasks with datasets on the paper suite.
TASK_RESULTS = [f"{layout.TASK_TABLES[t]}.{ext}" for t, ds in TASK_DATASETS.items() if ds for ext in ("csv", "md")]


def task_datasets(table):
    """The datasets a task table covers: refused before any job when the config gives it none."""
    task = TABLE_TASK[table]
    if not TASK_DATASETS[task]:
        raise WorkflowError(f"results/{table} needs {task} datasets: set tasks.datasets.{task} (config.paper.yaml lists them)")
    return TASK_DATASETS[task]
