# Paths shared by the rules: one place to see where every artifact lives.
#
# Each job gets `code=code_version("<dicap command>")` among its params, a hash of the Python
# source that command runs (src/dicap/code_version.py).  Snakemake reruns a job whose params
# changed, so editing src/dicap/prompting/losses.py reruns prompt training and what follows,
# and leaves the data, backbones and counterfactuals alone.
#
# Counterfactual-dependent artifacts carry a {variant} of the counterfactual settings:
#   main           - config.yaml's counterfactual block as it is (Table 1 uses it)
#   s<value>       - the same with guidance scale s = <value> (ablation_scale, figures)
#   sample_<name>  - the same with another y_cf sampling strategy (ablation_sampling)
#   oracle         - main's targets, but the *true* counterfactuals (ablation_oracle)

DATA = f"{BUILD}/data/{{dataset}}"
# The few-shot file is keyed by a hash of the parameters that draw it (CoOp keys its cache by
# shots and seed only, and silently reuses a stale one): other shots are another file.
SPLIT_PARAMS = {k: config["data"][k] for k in ("shots", "val_shots" if PAPER else "spurious_strength")}
SPLIT = f"{BUILD}/splits/{{dataset}}/seed{{seed}}-{params_hash(SPLIT_PARAMS)[:10]}.parquet"
CLIP = f"{BUILD}/models/{{dataset}}/clip"
DIFFUSION = f"{BUILD}/models/{{dataset}}/diffusion"
GUIDE_CLASSIFIER = f"{BUILD}/models/{{dataset}}/guide_classifier"
ORACLE = f"{BUILD}/models/{{dataset}}/oracle"
CF_DIR = f"{BUILD}/counterfactuals/{{dataset}}/{{variant}}/seed{{seed}}"
FEATURES = f"{BUILD}/features/{{dataset}}"
PROMPT = f"{BUILD}/prompts/{{dataset}}/{{variant}}/{{method}}/seed{{seed}}.safetensors"
METRICS = f"{BUILD}/metrics/{{dataset}}/{{variant}}/seed{{seed}}.csv"
AUDIT = f"{BUILD}/audit/{{dataset}}/{{variant}}/seed{{seed}}.parquet"
ORACLE_REPORTS = [f"{ORACLE}/report.json".format(dataset=d) for d in DATASETS]
# The paper suite's images stay the downloaded files (under data.root); the embedded suite's
# rendered ones live in one safetensors file.
DATA_FILES = [f"{DATA}/factors.parquet", f"{DATA}/classes.json"] + ([] if PAPER else [f"{DATA}/images.safetensors"])
# The audit and its grids need the true counterfactuals only the embedded suite knows.
AUDIT_RESULTS = [] if PAPER else ["results/counterfactual_audit.csv", *expand("results/figures/counterfactuals_{dataset}.png", dataset=DATASETS)]
# The numbers every run is compared with (results/reproduction.md); a suite without one gets
# a comparison that says so.  Maintained with `dicap record-reference`, never a workflow output.
REFERENCE = f"results/reference/{config['suite']}.csv"
SOURCE_READY = os.path.join(config["data"].get("root", "data"), "{dataset}", "READY.json")  # paper suite: a download


CF_IMAGES = f"{CF_DIR}/counterfactuals.safetensors"
CF_TABLE = f"{CF_DIR}/counterfactuals.parquet"
GENERATED_VARIANTS = r"main|s\d+(\.\d+)?|sample_[a-z]+"


def log_path(rule, *wildcards):
    return os.path.join("logs", rule, *wildcards) + ".log"


def bench_path(rule, *wildcards):
    return os.path.join("logs", "benchmarks", rule, *wildcards) + ".tsv"


def dataset_source(wildcards):
    """The paper suite prepares a dataset from its download; the embedded suite renders it."""
    return {"source": SOURCE_READY.format(dataset=wildcards.dataset)} if PAPER else {}


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
    if config["counterfactual"]["guide"] == "classifier":
        return {"classifier": GUIDE_CLASSIFIER.format(dataset=wildcards.dataset)}
    return {}


def scale_variant(scale):
    """The variant that generates with guidance scale ``scale`` (``main`` for config's own)."""
    return "main" if float(scale) == float(config["counterfactual"]["scale"]) else f"s{float(scale):g}"


def sampling_variant(strategy):
    return "main" if strategy == config["counterfactual"]["sampling"] else f"sample_{strategy}"


def variant_params(variant):
    """config.yaml's counterfactual block with the variant's one change applied."""
    params = dict(config["counterfactual"])
    if variant.startswith("s") and not variant.startswith("sample_"):
        params["scale"] = float(variant[1:])
    elif variant.startswith("sample_"):
        params["sampling"] = variant.removeprefix("sample_")
    elif variant != "main":
        raise WorkflowError(f"variant {variant!r} does not generate counterfactuals")
    return params


def cf_source(wildcards):
    """The merged counterfactuals a variant trains on: the oracle reuses main's true ones."""
    variant = "main" if wildcards.variant == "oracle" else wildcards.variant
    fill = dict(dataset=wildcards.dataset, seed=wildcards.seed, variant=variant)
    return {"images": CF_IMAGES.format(**fill), "table": CF_TABLE.format(**fill)}


def variant_methods(variant):
    """Methods trained per variant: all of them for main, DiCap alone for an ablation."""
    return METHODS if variant == "main" else ["dicap"]


def figure_runs(wildcards):
    """The first seed's main run, then its other scales shown in the counterfactual grid."""
    variants = ["main"] + [scale_variant(x) for x in config["report"]["figure_scales"] if scale_variant(x) != "main"]
    fill = dict(dataset=wildcards.dataset, seed=SEEDS[0])
    return {
        "images": [CF_IMAGES.format(variant=v, **fill) for v in variants],
        "audits": [AUDIT.format(variant=v, **fill) for v in variants],
    }


def ablation_variants(kind):
    """The variants an ablation compares, the main run included."""
    settings = config["ablations"]
    if kind == "scale":
        return list(dict.fromkeys([scale_variant(s) for s in [*settings["scales"], config["counterfactual"]["scale"]]]))
    if kind == "sampling":
        return list(dict.fromkeys(sampling_variant(s) for s in settings["samplings"]))
    return ["main", "oracle"]


def ablation_inputs(kind):
    variants = ablation_variants(kind)
    generated = [v for v in variants if v != "oracle"]
    return {
        "metrics": [METRICS.format(dataset=d, variant=v, seed=s) for d in DATASETS for v in variants for s in SEEDS],
        "audits": expand(AUDIT, dataset=DATASETS, variant=generated, seed=SEEDS),
        "oracles": expand(ORACLE, dataset=DATASETS),
    }


def reproduction_inputs(wildcards):
    """Every table the run regenerated, and the suite's reference numbers where there are any."""
    inputs = {"table1": "results/table1.csv", "backbones": "results/backbones.csv"}
    if not PAPER:
        inputs["audit"] = "results/counterfactual_audit.csv"
    if os.path.exists(REFERENCE):
        inputs["reference"] = REFERENCE
    return inputs


def artifact_targets():
    """The artifacts DVC caches and shares: data, splits, backbones, counterfactuals, features.

    Everything the workflow writes under these folders for the main variant is listed, so
    a DVC stage that asks Snakemake for exactly these owns the folders whole.
    """
    models = [CLIP, DIFFUSION] + ([GUIDE_CLASSIFIER] if config["counterfactual"]["guide"] == "classifier" else [])
    models += [] if PAPER else [ORACLE]
    return [
        *expand(DATA_FILES, dataset=DATASETS),
        *expand(SPLIT, dataset=DATASETS, seed=SEEDS),
        *expand(models, dataset=DATASETS),
        *expand([CF_IMAGES, CF_TABLE], dataset=DATASETS, variant="main", seed=SEEDS),
        *expand(f"{CF_DIR}/shard{{shard}}-of-{SHARDS}.{{ext}}", dataset=DATASETS, variant="main", seed=SEEDS,
                shard=range(SHARDS), ext=["safetensors", "parquet"]),
        *expand(f"{FEATURES}/main/seed{{seed}}.safetensors", dataset=DATASETS, seed=SEEDS),
        *expand(f"{FEATURES}/eval.safetensors", dataset=DATASETS),
    ]
