"""A hash of the source code one job runs, so that editing it reruns that job and its dependents.

Snakemake's ``code`` trigger only sees a rule's own shell line, not the Python modules the
``dicap`` job behind it imports.  Each rule therefore passes ``code_version(<rule>)``
through ``params:``: a hash of the job module of its rule file (``jobs/<rule file>.py``), and
every ``dicap`` module reachable from its imports (lazy ones included, and modules named as
``"dicap.x:Attr"`` strings that are imported when called), plus the data files those modules
name (``registry.yaml``).  Editing ``prompting/losses.py`` changes the hash of
the prompt-training rules and nothing upstream of them; Snakemake reruns prompt training
and what follows, and leaves data, backbones, counterfactuals and feature caches alone.
The unit is the module, not the function: editing one job reruns the jobs of its rule file.

The closure is found statically (``ast``), so computing it imports nothing heavy: the
Snakefile calls it for every rule at parse time.  This module imports nothing from the
package, and reads the job files as text.  The hashes are kept in
``__pycache__/code_versions.json`` beside the package, under a stamp of every package file's
path, size and modification time, so a rerun with no edit does not parse the package again
(most of a no-op rerun's time was spent here).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

PACKAGE = "dicap"
ROOT = Path(__file__).resolve().parent
JOBS = "jobs"  # the app: rules/X.smk runs the functions of jobs/X.py, each named after its rule
DATA_SUFFIXES = (".yaml", ".yml", ".json")
_ENTRY_POINT = re.compile(rf"{PACKAGE}(\.\w+)+:\w+")  # "dicap.prompting.cocoop:CoCoOp"
CACHE = ROOT / "__pycache__" / "code_versions.json"  # derived data, where Python keeps its own


def module_file(name: str) -> Path | None:
    """``dicap.a.b`` -> ``<root>/a/b.py`` or ``<root>/a/b/__init__.py``; None outside the package."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    """``<root>/a/b.py`` -> ``dicap.a.b``."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([PACKAGE, *parts])


def imported_modules(node: ast.AST, current: str) -> set[str]:
    """Names of the modules imported anywhere under ``node`` (function-level imports too).

    ``from dicap.x import y`` yields both ``dicap.x`` and ``dicap.x.y``: ``y`` may be a module
    of its own or a name in ``dicap.x``.
    """
    current_file = module_file(current)
    package = current if current_file is not None and current_file.name == "__init__.py" else current.rpartition(".")[0]
    names: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Import):
            names |= {alias.name for alias in sub.names}
        elif isinstance(sub, ast.ImportFrom):
            if sub.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (sub.level - 1)]
                module = ".".join([*anchor, sub.module] if sub.module else anchor)
            else:
                module = sub.module or ""
            names |= {f"{module}.{alias.name}" for alias in sub.names} | {module}
    return names


def _imported_files(node: ast.AST, current: str) -> set[Path]:
    """Package files imported anywhere under ``node``, with every parent package's ``__init__``."""
    found: set[Path] = set()
    for name in imported_modules(node, current):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # a parent package's __init__ runs on import as well
            path = module_file(".".join(parts[:i]))
            if path is not None:
                found.add(path)
    return found


def _named_modules(tree: ast.AST) -> set[Path]:
    """Package modules a module names as ``"dicap.x.y:Attr"`` strings and imports when called
    (the learner registry loads each class so, to keep torch out of the Snakefile)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _ENTRY_POINT.fullmatch(node.value):
            path = module_file(node.value.partition(":")[0])
            if path is not None:
                found.add(path)
    return found


def _data_files(tree: ast.AST, directory: Path) -> set[Path]:
    """Data files a module names as string constants and keeps beside itself."""
    return {
        directory / node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and node.value.endswith(DATA_SUFFIXES) and "/" not in node.value and (directory / node.value).is_file()
    }


@lru_cache(maxsize=None)
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def module_closure(files: set[Path]) -> set[Path]:
    """``files`` and every package module and data file they reach, transitively."""
    seen: set[Path] = set()
    todo = list(files)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.suffix == ".py":
            todo += _reach(path)
    return seen


@lru_cache(maxsize=None)
def _reach(path: Path) -> frozenset[Path]:
    """What one module imports or keeps beside itself; cached, since the Snakefile asks for
    every rule's closure and the closures share most modules (the no-op rerun's time)."""
    tree = _parse(path)
    return frozenset(_imported_files(tree, module_name(path)) | _data_files(tree, path.parent) | _named_modules(tree))


def job_file(job: str) -> Path:
    """The job module (``jobs/<rule file>.py``) that defines ``job`` (a rule's name) at its top level."""
    found = [path for path in sorted((ROOT / JOBS).glob("*.py"))
             if any(isinstance(n, ast.FunctionDef) and n.name == job for n in _parse(path).body)]
    if len(found) != 1:
        where = f"defined in {[str(p.relative_to(ROOT)) for p in found]}" if found else f"in no {ROOT.name}/{JOBS}/*.py"
        raise KeyError(f"no dicap job named {job!r}: it must be one function of that name, and it is {where}")
    return found[0]


class JobSources(NamedTuple):
    """What one job runs: its job module, and the package modules and data files it reaches."""

    module: Path
    files: set[Path]


def job_sources(job: str) -> JobSources:
    """The job's module with its package ``__init__`` files, and everything they import."""
    path = job_file(job)
    parts = module_name(path).split(".")
    packages = {module_file(".".join(parts[:i])) for i in range(1, len(parts))}  # their __init__ runs first
    return JobSources(path, module_closure({path} | {p for p in packages if p is not None}))


@lru_cache(maxsize=None)
def code_version(job: str) -> str:
    """A short hash of everything ``dicap <job>`` runs from this package."""
    stamp, known = _cached_versions()
    if job not in known:
        known[job] = _hash_sources(job)
        _save_versions(stamp, known)
    return known[job]


def _hash_sources(job: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(job_sources(job).files):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + source_bytes(path))
    return digest.hexdigest()[:12]


SCHEMA_SUFFIX = ".schema.yaml"
# JSON Schema's annotations: they document a key and never change what validates or its default
ANNOTATIONS = frozenset({"description", "title", "examples", "$comment"})
_NAMED_CHILDREN = frozenset({"properties", "patternProperties", "$defs"})  # keys there are names, not keywords


def source_bytes(path: Path) -> bytes:
    """What of a file can change a job's result: all of it, except in a JSON Schema
    (``*.schema.yaml``), whose annotations and comments are left out.  Every job that reads the
    config imports the schema, so a reworded description would otherwise rerun all of them."""
    if not path.name.endswith(SCHEMA_SUFFIX):
        return path.read_bytes()
    import yaml

    return json.dumps(_without_annotations(yaml.safe_load(path.read_text())), sort_keys=True).encode()


def _without_annotations(node: object, names: bool = False) -> object:
    """``node`` with every annotation keyword removed; ``names``: its keys are property names."""
    if isinstance(node, dict):
        return {key: _without_annotations(value, not names and key in _NAMED_CHILDREN)
                for key, value in node.items() if names or key not in ANNOTATIONS}
    if isinstance(node, list):
        return [_without_annotations(item) for item in node]
    return node


def source_stamp() -> str:
    """A hash of every package file's path, size and modification time: any edit changes it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in ROOT.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        st = path.stat()
        digest.update(f"{path.relative_to(ROOT)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@lru_cache(maxsize=None)
def _cached_versions() -> tuple[str, dict[str, str]]:
    """This process's stamp and the hashes saved under it (none if the package changed since)."""
    stamp = source_stamp()
    try:
        saved = json.loads(CACHE.read_text())
    except (OSError, ValueError):
        return stamp, {}
    versions = saved.get("versions") if isinstance(saved, dict) and saved.get("stamp") == stamp else None
    return stamp, dict(versions) if isinstance(versions, dict) else {}


def _save_versions(stamp: str, versions: dict[str, str]) -> None:
    """Best effort and atomic: a read-only install only loses the speed-up."""
    tmp = CACHE.with_name(f".{CACHE.name}.{os.getpid()}")
    try:
        CACHE.parent.mkdir(exist_ok=True)
        tmp.write_text(json.dumps({"stamp": stamp, "versions": versions}, sort_keys=True))
        os.replace(tmp, CACHE)
    except OSError:
        tmp.unlink(missing_ok=True)
