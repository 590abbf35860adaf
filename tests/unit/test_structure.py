"""The code's shape, checked: imports only point down, no cycle between folders, every rule's
job is the function of the rule's name, cli.py only dispatches, and the schema's enums and
defaults are tied to the code and to config.yaml."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dicap import cli
from dicap.code_version import ROOT, JOB_FILE, imported_modules, job_file, module_file, module_name
from dicap.config import load_config, schema, with_defaults

REPO = Path(__file__).resolve().parents[1]

# Layers, bottom first: a module imports from its own unit or from a lower layer, never higher.
# A stage's jobs.py sits in its folder (a rule's code is found by its name), but in the import
# graph it is the top layer with cli.py: it wires the library below together.
LAYERS = [
    {"config", "io", "runtime", "guards", "layout", "code_version", "worker"},  # config, IO, processes
    {"data", "backbones"},  # backbones and data
    {"counterfactual", "prompting"},  # the method
    {"evaluation", "audit"},  # scoring the method
    {"report"},  # tables and figures
    {"jobs", "cli"},  # what the rules run
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def unit(path: Path) -> str:
    """A module's place in the graph: ``jobs`` for any <stage>/jobs.py, else its folder (or file)."""
    rel = path.relative_to(ROOT)
    return "jobs" if rel.name == JOB_FILE else rel.parts[0].removesuffix(".py")


def import_edges() -> list[tuple[Path, Path]]:
    """(importer, imported) for every import of a package module anywhere in a file (lazy and
    TYPE_CHECKING imports included), read with ast: nothing is imported to find them."""
    edges = []
    for path in sorted(ROOT.rglob("*.py")):
        for name in imported_modules(ast.parse(path.read_text()), module_name(path)):
            target = module_file(name)
            if target is not None and target != path and target.name != "__init__.py":
                edges.append((path, target))
    return edges


def test_every_module_has_a_layer():
    assert {unit(p) for p in ROOT.rglob("*.py") if p.name != "__init__.py"} <= set(LAYER)


def test_imports_only_point_down():
    upward = [f"{a.relative_to(ROOT)} -> {b.relative_to(ROOT)}" for a, b in import_edges()
              if unit(a) != unit(b) and LAYER[unit(b)] >= LAYER[unit(a)]]
    assert not upward, upward


def test_no_cycle_between_folders():
    graph: dict[str, set[str]] = {}
    for a, b in import_edges():
        if unit(a) != unit(b) and "jobs" not in (unit(a), unit(b)):
            graph.setdefault(unit(a), set()).add(unit(b))
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != "open", f"cycle: {' -> '.join([*trail, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_jobs_import_no_other_job_module_and_cli_no_domain_module():
    for a, b in import_edges():
        assert not (unit(a) == "jobs" and unit(b) == "jobs"), f"{a.relative_to(ROOT)} imports {b.relative_to(ROOT)}"
        if a.name == "cli.py":
            assert unit(b) in LAYERS[0], f"cli.py imports {b.relative_to(ROOT)}: it only parses and dispatches"


def test_cli_is_small():
    assert len((ROOT / "cli.py").read_text().splitlines()) < 150


# --- rules, commands and jobs: one name ------------------------------------------------------------


def rule_blocks() -> dict[str, str]:
    """Rule name (as written: ``f"ablation_{_ablation}"`` for a loop) -> its text."""
    blocks = {}
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        parts = re.split(r"(?m)^\s*rule\b", path.read_text())[1:]
        for block in parts:
            named = re.match(r"\s*(\w+)\s*:", block)
            name = named.group(1) if named else re.search(r"name:\s*\n\s*(f?\"[^\"]+\")", block).group(1)
            blocks[name] = block
    return blocks


def test_each_rule_runs_the_job_of_its_name_and_hashes_its_code():
    jobs = cli.jobs()
    blocks = rule_blocks()
    assert len(blocks) > 20
    for name, block in blocks.items():
        if "shell:" not in block:  # `all`, `artifacts`: targets only
            continue
        job = name[2:-1] if name.startswith('f"') else name
        # A rule made in a loop reads the loop variable from params: its shell line runs when the
        # job does, after the loop, when the variable holds the last value (an f-string there
        # made every ablation run the last ablation's job).
        shell = re.sub(r"\{_(\w+)\}", r"{params.\1}", job)
        assert re.search(rf'"dicap {re.escape(shell)} ', block), f"rule {name} does not run `dicap {shell}`"
        for variable in re.findall(r"\{_(\w+)\}", job):
            assert f"{variable}=_{variable}," in block, f"rule {name} does not put _{variable} in its params"
        assert f"code=code_version({name})" in block or f'code=code_version("{job}")' in block, name
        if "{" not in job:
            assert job in jobs and job_file(job).parent.name != "", job


def test_every_rule_name_is_a_job_found_by_name():
    out = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "--list-rules"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    rules = set(out.stdout.split()) - {"all", "artifacts"}
    assert {"counterfactual_shard", "table1", "figure_table1", "audit_summary", "ablation_true_cf"} <= rules
    jobs = cli.jobs()
    for rule in rules:
        path = job_file(rule)
        assert path == ROOT / path.parent.name / JOB_FILE and rule in jobs, rule
    assert set(jobs) - rules == {"record_reference", "readme_results", "validate_config", "serve"}  # maintainer's commands, the warm worker


def test_the_cli_knows_every_jobs_file_and_every_job_in_it():
    assert set(cli.JOB_MODULES) == {module_name(p) for p in ROOT.glob(f"*/{JOB_FILE}")}
    for name in cli.JOB_MODULES:
        tree = ast.parse(module_file(name).read_text())
        public = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
        listed = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                      and any(getattr(t, "id", None) == "__all__" for t in n.targets))
        helpers = {"epochs"}  # argparse types, not jobs
        assert sorted(listed) == sorted(set(public) - helpers), name


def test_a_job_name_may_be_written_with_hyphens(capsys):
    with pytest.raises(SystemExit):
        cli.main(["counterfactual-shard", "--help"])
    assert "--class-text-features" in capsys.readouterr().out


# --- the schema: enums tied to the code, defaults tied to config.yaml ------------------------------


def _node(*keys: str) -> dict:
    node = schema()
    for key in keys:
        node = node["properties"][key]
    return node


def test_schema_enums_are_the_codes_names():
    from dicap.backbones.guides import GUIDES
    from dicap.backbones.latent_diffusion import DTYPES
    from dicap.counterfactual.sampling import STRATEGIES
    from dicap.data.embedded import DATASETS
    from dicap.data.paper_sources import dataset_keys, load_registry
    from dicap.prompting.methods import METHODS

    # the config's datasets are the classification ones; retrieval and VQA entries (issue 15) are not in that list
    assert _node("datasets")["items"]["enum"] == [*DATASETS, *dataset_keys(load_registry(), "classification")]
    embedded = next(c for c in schema()["allOf"] if c["if"]["properties"]["suite"]["const"] == "embedded")
    assert embedded["then"]["properties"]["datasets"]["items"]["enum"] == list(DATASETS)
    assert _node("methods")["items"]["enum"] == list(METHODS)
    assert _node("counterfactual", "guide")["enum"] == list(GUIDES)
    assert sorted(_node("counterfactual", "sampling")["enum"]) == sorted(STRATEGIES)
    assert sorted(_node("ablations", "samplings")["items"]["enum"]) == sorted(STRATEGIES)
    assert schema()["properties"]["diffusion"]["properties"]["pretrained"]["properties"]["dtype"]["enum"] == list(DTYPES)
    suites = {load_config(REPO / name)["suite"] for name in ("config.yaml", "config.paper.yaml")}
    assert sorted(_node("suite")["enum"]) == sorted(suites)


def test_config_yaml_is_the_schemas_defaults():
    """config.yaml lists every key with its default, so the two cannot drift apart."""
    assert with_defaults({}) == yaml.safe_load((REPO / "config.yaml").read_text())


def _leaves(node: dict, path: tuple = ()):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*path, key))
        else:
            yield (*path, key), value


def test_the_paper_config_holds_only_what_the_paper_suite_changes():
    paper = yaml.safe_load((REPO / "config.paper.yaml").read_text())
    defaults = with_defaults({})
    for path, value in _leaves(paper):
        default = defaults
        for key in path:
            default = default.get(key, {}) if isinstance(default, dict) else {}
        assert value != default, f"config.paper.yaml repeats the default of {'.'.join(path)}"
    # alone (with the defaults) it is the config the cluster profile merges over config.yaml
    merged = {**defaults, **{k: {**defaults.get(k, {}), **v} if isinstance(v, dict) else v for k, v in paper.items()}}
    assert load_config(REPO / "config.paper.yaml") == merged
