"""Each rule's params hold only what its job reads (issue 29), read from Snakemake's own dry run of
the tiny config: every job's ``--params`` JSON against the keys its job's code reads, and a key
changed against the jobs whose commands it changes.  Snakemake reruns a job whose params changed,
so a key a job does not read must not reach its params: changing ``data.shots`` would otherwise
re-render the datasets and retrain every backbone.  Four dry runs, no job."""

from __future__ import annotations

import ast
import json
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml

from dicap.code_version import imported_modules, job_file, module_closure, module_file, module_name
from dicap.prompting.methods import METHODS
from snakemake_runner import snakemake, tiny_args

# The tables record the whole config beside them (provenance: its hash), so they read all of it.
WHOLE_CONFIG = "--config-json"


def planned_commands(workdir: Path, change: dict | None = None) -> dict[str, tuple[str, str]]:
    """Log file -> (rule, shell command) of every job a dry run of the tiny config plans in the
    empty ``workdir``, with ``change`` merged over the config as one more config file."""
    extra = []
    if change:
        (workdir / "change.yaml").write_text(yaml.safe_dump(change))
        extra = [str(workdir / "change.yaml")]
    args = tiny_args(workdir)
    at = args.index("--directory")
    out = snakemake("-n", "-p", *args[:at], *extra, *args[at:])
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = {}
    for block in out.stdout.split("\n\n"):
        rule, log, command = (re.search(rf"(?m)^{p}(.*)$", block) for p in ("rule ", r"\s+log: ", "Shell command: "))
        if rule and log and command:
            jobs[log.group(1)] = (rule.group(1).rstrip(":"), command.group(1))
    return jobs


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, tuple[str, str]]:
    return planned_commands(tmp_path_factory.mktemp("base"))


def params_keys(rule: str, command: str) -> set[str]:
    """The keys of a command's --params JSON; each method's, for a job given a map of methods."""
    argv = shlex.split(command)
    keys: set[str] = set()
    for i, arg in enumerate(argv[:-1]):
        if arg == "--params":
            block = json.loads(argv[i + 1])
            keys |= {k for v in block.values() for k in v} if set(block) <= set(METHODS) else set(block)
    return keys


@cache
def read_keys(job: str) -> frozenset[str]:
    """The keys a job's code can read: string subscripts, ``.get``/``.pop`` and ``in`` tests in the
    job's function and every module it imports (lazily too), the strings of a module's ``*_KEY`` or
    ``*_KEYS`` constants, and a constructor's argument names (a learner takes its recipe by keyword).
    Read with ast: a key named nowhere there is read by nothing."""
    path = job_file(job)
    tree, name = ast.parse(path.read_text()), module_name(path)
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == job)
    imports = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
    files = {module_file(m) for m in imported_modules(function, name) | imported_modules(imports, name)} - {None}
    trees = [function, *(ast.parse(p.read_text()) for p in sorted(module_closure(files)) if p.suffix == ".py")]
    keys: set[str] = set()

    def text(node) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    for t in trees:
        for n in ast.walk(t):
            if isinstance(n, ast.Subscript) and text(n.slice):
                keys.add(text(n.slice))
            elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("get", "pop") and n.args \
                    and text(n.args[0]):
                keys.add(text(n.args[0]))
            elif isinstance(n, ast.Compare) and text(n.left) and isinstance(n.ops[0], (ast.In, ast.NotIn)):
                keys.add(text(n.left))
            elif isinstance(n, ast.FunctionDef) and n.name == "__init__":
                keys |= {a.arg for a in n.args.args + n.args.kwonlyargs}
        for n in getattr(t, "body", []):
            if isinstance(n, ast.Assign) and any(isinstance(x, ast.Name) and x.id.endswith(("_KEY", "_KEYS")) for x in n.targets):
                keys |= {text(c) for c in ast.walk(n.value) if text(c)}
    return frozenset(keys)


def test_the_key_reader_finds_what_a_job_reads_and_not_what_another_does():
    """The reader can fail the test below: the split keys are make_split's, not the renderer's."""
    assert {"shots", "spurious_strength"} <= read_keys("make_split")
    assert not {"shots", "spurious_strength", "val_shots"} & read_keys("prepare_dataset")
    assert "shards" not in read_keys("counterfactual_shard")  # the {shards} wildcard, not a --params key
    assert "epochs" not in read_keys("evaluate") and "epochs" in read_keys("train_prompt")


def test_every_rules_params_hold_only_keys_its_job_reads(base):
    rules = {rule for rule, _ in base.values()}
    assert {"prepare_dataset", "make_split", "clip_backbone", "counterfactual_shard", "evaluate", "train_prompt"} <= rules
    unread = {}
    for rule, command in base.values():
        extra = params_keys(rule, command) - read_keys(rule)
        if extra:
            unread.setdefault(rule, set()).update(extra)
    assert not unread, f"params keys no code of the job reads: {unread}"
    assert all(WHOLE_CONFIG in c for r, c in base.values() if r in ("table1", "task_table"))


# A change -> the rules none of whose jobs may change (their params hold no changed key).
UNCHANGED = [
    ({"data": {"shots": 3, "spurious_strength": 0.5}},
     {"prepare_dataset", "clip_backbone", "diffusion_backbone", "oracle", "diffusion_check", "encode_eval_features"}),
    ({"counterfactual": {"sampling": "random"}, "prompt": {"epochs": 7, "cf_weight": 0.5}},
     {"prepare_dataset", "make_split", "clip_backbone", "diffusion_backbone", "evaluate", "evaluate_task"}),
]


@pytest.mark.parametrize(("change", "unchanged"), UNCHANGED)
def test_a_key_reruns_only_the_rules_that_read_it(base, tmp_path, change, unchanged):
    changed = planned_commands(tmp_path, change)
    moved = {rule for log, (rule, command) in changed.items() if base.get(log, (rule, None))[1] != command}
    assert moved, "the change reached no job"
    assert not moved & unchanged, f"{sorted(moved & unchanged)} would rerun for a key they do not read"
    if "data" in change:  # the splits are redrawn, and what follows them reruns
        assert {"make_split", "counterfactual_shard", "train_prompt"} <= moved
