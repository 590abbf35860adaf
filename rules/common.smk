# Paths shared by the rules: one place to see where every artifact lives.

DATA = f"{BUILD}/data/{{dataset}}"
SPLIT = f"{BUILD}/splits/{{dataset}}/seed{{seed}}.parquet"
CLIP = f"{BUILD}/models/{{dataset}}/clip"
DIFFUSION = f"{BUILD}/models/{{dataset}}/diffusion"
GUIDE_CLASSIFIER = f"{BUILD}/models/{{dataset}}/guide_classifier"
CF_DIR = f"{BUILD}/counterfactuals/{{dataset}}/seed{{seed}}"
FEATURES = f"{BUILD}/features/{{dataset}}"
PROMPT = f"{BUILD}/prompts/{{dataset}}/{{method}}/seed{{seed}}.safetensors"
METRICS = f"{BUILD}/metrics/{{dataset}}/seed{{seed}}.csv"
DATA_FILES = [f"{DATA}/images.safetensors", f"{DATA}/factors.parquet", f"{DATA}/classes.json"]


CF_IMAGES = f"{CF_DIR}/counterfactuals.safetensors"
CF_TABLE = f"{CF_DIR}/counterfactuals.parquet"


def log_path(rule, *wildcards):
    return os.path.join("logs", rule, *wildcards) + ".log"


def bench_path(rule, *wildcards):
    return os.path.join("logs", "benchmarks", rule, *wildcards) + ".tsv"


def dataset_dir(wildcards, input):
    """The dataset store's directory, derived from the rule's ``data`` input files."""
    return os.path.dirname(input.data[0])


def guide_inputs(wildcards):
    """The noise-aware classifier is an input only when the 'classifier' guide is chosen."""
    if config["counterfactual"]["guide"] == "classifier":
        return {"classifier": GUIDE_CLASSIFIER.format(dataset=wildcards.dataset)}
    return {}
