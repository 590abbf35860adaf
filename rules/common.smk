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


def log_path(rule, *wildcards):
    return "logs/" + "/".join([rule, *wildcards]) + ".log"


def bench_path(rule, *wildcards):
    return "logs/benchmarks/" + "/".join([rule, *wildcards]) + ".tsv"
