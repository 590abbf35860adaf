"""The code's shape, checked: imports only point down, no cycle between folders, every rule's
job is the function of the rule's name, cli.py only dispatches, and the schema's enums and
defaults are tied to the code and to config.yaml."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from dicap import cli
from dicap.code_version import JOBS, ROOT, imported_modules, job_file, module_file, module_name
from dicap.config import load_config, schema, with_defaults
from helpers import rules_by_file

REPO = Path(__file__).resolve().parents[2]

# Layers, bottom first: a module imports from its own unit (a folder, or a top-level file) or
# from a lower layer, never higher.  The app (jobs/, one module per rule file, and the
# maintainer's tools) wires the library below together; cli.py only dispatches to it.
LAYERS = [
    {"cpu"},  # which CPU this is, and torch's kernels pinned on it: read by runtime before torch loads
    {"config", "io", "runtime", "guards", "layout", "code_version", "worker"},  # config, IO, processes
    {"runs"},  # which run an invocation is, and its folder (the run name hashes the config)
    {"data", "backbones"},  # backbones and data
    {"counterfactual", "prompting"},  # the method
    {"evaluation", "audit"},  # scoring the method
    {"report"},  # tables and figures
    {"budget"},  # what the grid costs (measured costs as data), which sizes its shards and walltimes
    {"plan"},  # the study's grid, read by the rules
    {"jobs", "tools", "cli", "testing"},  # the app: what the rules and the maintainer run; tests' stand-ins
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def unit(path: Path) -> str:
    """A module's place in the graph: its folder under the package, or its own name."""
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


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
        if unit(a) != unit(b):
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
        assert not (unit(a) == JOBS and unit(b) == JOBS), f"{a.relative_to(ROOT)} imports {b.relative_to(ROOT)}"
        if a.name == "cli.py":
            assert unit(b) in LAYERS[0] | LAYERS[1], f"cli.py imports {b.relative_to(ROOT)}: it only parses and dispatches"


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
            assert job in jobs and job_file(job).parent.name == JOBS, job


def test_rule_files_and_job_modules_correspond_both_ways():
    """rules/X.smk: rule r  <=>  src/dicap/jobs/X.py: def r (listed in its __all__)."""
    from dicap.plan import ABLATION_NAMES

    modules = {p.stem for p in (ROOT / JOBS).glob("*.py") if p.name != "__init__.py"}
    by_file = rules_by_file()
    assert set(by_file) - {"common"} == modules
    for stem, names in by_file.items():
        if stem == "common":
            assert not names, f"rules/common.smk defines rules {names}: it holds input functions only"
            continue
        names = {n2 for n in names for n2 in ([n.replace("{_ablation}", a) for a in ABLATION_NAMES] if "{_" in n else [n])}
        tree = ast.parse((ROOT / JOBS / f"{stem}.py").read_text())
        listed = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                      and any(getattr(t, "id", None) == "__all__" for t in n.targets))
        assert set(listed) == names, f"rules/{stem}.smk runs {sorted(names)}, jobs/{stem}.py offers {sorted(listed)}"
        for name in names:
            assert job_file(name) == ROOT / JOBS / f"{stem}.py", name


def test_the_cli_knows_every_job_module_and_every_job_in_it():
    assert set(cli.JOB_MODULES) == {module_name(p) for p in (ROOT / JOBS).glob("*.py") if p.name != "__init__.py"}
    for name in cli.JOB_MODULES:
        tree = ast.parse(module_file(name).read_text())
        public = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
        listed = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                      and any(getattr(t, "id", None) == "__all__" for t in n.targets))
        helpers = {"epochs"}  # argparse types, not jobs
        assert sorted(listed) == sorted(set(public) - helpers), name


def test_the_library_holds_no_job():
    """No library folder has a jobs module, and no library module imports the app."""
    assert not [p for p in ROOT.rglob("jobs.py")]
    for a, b in import_edges():
        if unit(a) not in LAYERS[-1]:
            assert unit(b) not in LAYERS[-1], f"{a.relative_to(ROOT)} imports the app ({b.relative_to(ROOT)})"


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
    from dicap.data.scm import DEFAULT_SPURIOUS_FACTOR, SPURIOUS_FACTORS
    from dicap.prompting.methods import METHODS

    # the paper suite's datasets are checked against the registry loaded (issue 27), not a list in the schema:
    # the config reads the same file as the data layer, and sees the same classification keys
    from dicap.config import registry_classification_keys
    from dicap.data.paper_sources import REGISTRY

    assert "enum" not in _node("datasets")["items"]
    assert registry_classification_keys() == (str(REGISTRY), dataset_keys(load_registry(), "classification"))
    embedded = next(c for c in schema()["allOf"] if c["if"]["properties"]["suite"]["const"] == "embedded")
    assert embedded["then"]["properties"]["datasets"]["items"]["enum"] == list(DATASETS)
    assert _node("methods")["items"]["enum"] == list(METHODS)
    assert _node("counterfactual", "guide")["enum"] == list(GUIDES)
    assert _node("data", "spurious_factor")["enum"] == list(SPURIOUS_FACTORS)
    assert _node("data", "spurious_factor")["default"] == DEFAULT_SPURIOUS_FACTOR
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


def test_no_learner_or_method_name_is_written_in_the_rules():
    """What a learner is and costs lives in prompting/registry.py; the plan reads it, the rules do not."""
    from dicap.prompting.methods import METHODS

    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        text = path.read_text()
        named = [m for m in METHODS if re.search(rf"[\"']{m}[\"']", text)]
        assert not named, f"{path.relative_to(REPO)} names {named}"


def test_the_architecture_table_is_the_code():
    """docs/architecture.md's rule -> job module -> library table: every rule once, in its rule
    file and job module, and every library module it names is one the job really imports."""
    from dicap.code_version import job_sources

    rows = [line.split("|")[1:-1] for line in (REPO / "docs" / "architecture.md").read_text().splitlines()
            if line.startswith("| `rules/") or line.startswith("| | `")]
    assert rows
    seen, rule_file = [], None
    for cells in rows:
        rule_file = re.findall(r"`rules/(\w+)\.smk`", cells[0])[0] if cells[0].strip() else rule_file
        module = re.findall(r"`jobs/(\w+)\.py`", cells[2])[0]
        assert module == rule_file, cells
        for rule in re.findall(r"`(\w+)`", cells[1]):
            seen.append(rule)
            assert job_file(rule) == ROOT / JOBS / f"{module}.py", rule
            imported = job_sources(rule).files
            for named in re.findall(r"`(\w+/\w+\.(?:py|yaml))`", cells[3]):
                assert ROOT / named in imported, f"{rule}: docs/architecture.md names {named}, which its job does not import"
    rules = {n for names in rules_by_file().values() for n in names if "{" not in n} | {f"ablation_{a}" for a in __import__("dicap.plan").plan.ABLATION_NAMES}
    assert sorted(seen) == sorted(rules)
