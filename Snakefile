"""DiCap reproduction workflow: data -> backbones -> counterfactuals -> prompts -> evaluation -> report.

    snakemake --cores 2                       # the embedded suite, end to end
    snakemake --profile slurm results/table1.csv
    snakemake --cores 2 ablation_guidance_scale   # an ablation by its name (sampling, true_cf, context, loss)

All parameters come from config.yaml over the schema's defaults (src/dicap/config.schema.yaml);
every rule receives its block through ``params:`` so changing a value reruns exactly the
jobs that depend on it.  Every rule of rules/X.smk runs the `dicap` job of its own name, the
function of that name in src/dicap/jobs/X.py; src/dicap/layout.py names every path.
"""

import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

# A checkout whose package is not installed (`snakemake -n` before `bash scripts/run.sh`) plans
# with its own src/; an installed one (or PYTHONPATH) wins, so a copy of the code can be tried.
try:
    import dicap  # noqa: F401
except ModuleNotFoundError:
    sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from dicap import budget, layout, runs, worker
from dicap.code_version import code_version
from dicap.cpu import pin_kernels
from dicap.config import ConfigError, as_json, check_yaml_syntax, coerce_config, validate_config, with_defaults
from dicap.plan import GENERATOR_CURVE, PROMPT_ABLATIONS, Plan

min_version("9.0")

# Each job pins torch's CPU kernels for itself (dicap.runtime); a DICAP_CPU_KERNELS it cannot take
# is refused here, before any job, on a copy of the environment.
try:
    pin_kernels(dict(os.environ))
except ValueError as err:
    raise WorkflowError(str(err)) from None

# Snakemake's own message for a YAML syntax error names no file, line or column.
try:
    check_yaml_syntax("config.yaml")
except ConfigError as err:
    raise WorkflowError(f"invalid configuration:\n{err}") from None


configfile: "config.yaml"


# --config values inside lists and maps arrive as strings: read them by the schema's types,
# fill in the schema's defaults for what no file gives, then validate (finite, ranged numbers),
# all before any job is planned.
try:
    config.update(validate_config(with_defaults(coerce_config(config)), "config"))
except ConfigError as err:
    raise WorkflowError(f"invalid configuration:\n{err}") from None

# A named run, or a one-off --config override, works in runs/<name>/ (src/dicap/runs.py): every
# relative path below resolves there, Snakemake's records included, and the main run's outputs
# stay as they are.  --directory, where given, is the user's own choice of folder and wins.
RUN = runs.run_name(config, workflow.config_settings.config)  # config: --config only, not --configfile
config["run"] = RUN
RUN_FOLDER = runs.run_folder(workflow.basedir, RUN)
if RUN_FOLDER is not None and workflow.overwrite_workdir is None:
    runs.anchor_user_paths(config)
    print(f"run {RUN}: every output goes under {os.path.relpath(RUN_FOLDER)}/ "
          f"(results in {os.path.relpath(RUN_FOLDER)}/results/)", file=sys.stderr)

    workdir: RUN_FOLDER


# Both suites write results/table1.csv: one must never overwrite the other's tables, nor take
# a pulled one (no Snakemake record) for its own and plan nothing.
if other := runs.foreign_results(config["suite"]):
    remedy = "another --directory" if workflow.overwrite_workdir else f"--config run={config['suite']}"
    raise WorkflowError(f"results/ holds the {other} suite's tables ({runs.RESULTS_RECORD}), and this is the "
                        f"{config['suite']} suite: give it a folder of its own with {remedy}, or move results/ away")

PAPER = config["suite"] == "paper"
DATASETS = config["datasets"]
SEEDS = config["seeds"]
METHODS = config["methods"]
ENV = "../envs/dicap.yaml"  # relative to rules/, where the rules live


wildcard_constraints:
    dataset=r"[a-z0-9_]+",
    target=r"[a-z0-9_]+",
    seed=r"\d+",
    shard=r"\d+",
    shards=r"\d+",
    method=r"[a-z_]+",
    split_key=r"[0-9a-f]{10}",
    variant=layout.VARIANTS,


# Local runs fork their jobs from one warm process that has imported torch & co. (dicap.worker):
# ~5 s less per job, byte-identical results.  Cluster jobs never use it; DICAP_WARM=0 turns it off.
WARM_WORKER = []
WARM_RUN = workflow.local_exec and worker.enabled()


onstart:
    if WARM_RUN:
        WARM_WORKER.append(worker.launch())


onsuccess:
    worker.stop(WARM_WORKER.pop() if WARM_WORKER else None)


onerror:
    worker.stop(WARM_WORKER.pop() if WARM_WORKER else None)


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/backbones.smk"
include: "rules/counterfactuals.smk"
include: "rules/features.smk"
include: "rules/prompts.smk"
include: "rules/evaluate.smk"
include: "rules/transfer.smk"
include: "rules/tasks.smk"
include: "rules/audit.smk"
include: "rules/report.smk"
include: "rules/ablations.smk"


report: "rules/captions/workflow.rst"


rule all:
    input:
        "results/table1.csv",
        "results/table1.md",
        "results/table1_metrics",
        TASK_RESULTS,
        "results/backbones.csv",
        "results/cost.csv",
        "results/figures/table1_bars.png",
        AUDIT_RESULTS,
        SHORTCUT_RESULTS,
        CALIBRATION_RESULTS,
        TRANSFER_RESULTS,
        "results/reproduction.csv",
        "results/reproduction.md",
    default_target: True


# The expensive artifacts DVC caches (dvc.yaml): `snakemake artifacts` builds exactly them.
rule artifacts:
    input:
        artifact_targets(),
