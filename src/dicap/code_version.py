"""A hash of the source code one job runs, so that editing it reruns that job and its dependents.

Snakemake's ``code`` trigger only sees a rule's own shell line, not the Python modules the
``dicap`` command behind it imports.  Each rule therefore passes ``code_version(<command>)``
through ``params:``: a hash of the command's function in ``cli.py``, the ``cli.py`` helpers it
calls, and every ``dicap`` module reachable from its imports (lazy ones included), plus the
data files those modules name (``registry.yaml``).  Editing ``prompting/losses.py`` changes the
hash of ``train-prompt`` and nothing upstream of it; Snakemake reruns prompt training and
what follows, and leaves data, backbones and counterfactuals alone.

The closure is found statically (``ast``), so computing it imports nothing heavy: the
Snakefile calls it for every rule at parse time.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "dicap"
ROOT = Path(__file__).resolve().parent
DATA_SUFFIXES = (".yaml", ".yml", ".json")


def _module_file(name: str) -> Path | None:
    """``dicap.a.b`` -> ``<root>/a/b.py`` or ``<root>/a/b/__init__.py``; None outside the package."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([PACKAGE, *parts])


def _imported_files(node: ast.AST, current: str) -> set[Path]:
    """``dicap`` modules imported anywhere under ``node`` (function-level imports too)."""
    found: set[Path] = set()
    package = current if _module_file(current) and _module_file(current).name == "__init__.py" else current.rpartition(".")[0]
    for sub in ast.walk(node):
        if isinstance(sub, ast.Import):
            names = [alias.name for alias in sub.names]
        elif isinstance(sub, ast.ImportFrom):
            if sub.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (sub.level - 1)]
                module = ".".join([*anchor, sub.module] if sub.module else anchor)
            else:
                module = sub.module or ""
            # `from dicap.x import y`: y may be a module of its own or a name in dicap.x
            names = [f"{module}.{alias.name}" for alias in sub.names] + [module]
        else:
            continue
        for name in names:
            # every parent package's __init__ runs on import as well
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                path = _module_file(".".join(parts[:i]))
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
        if path.suffix != ".py":
            continue
        tree = _parse(path)
        todo += _imported_files(tree, _module_name(path)) | _data_files(tree, path.parent)
    return seen


def _command_function(tree: ast.Module, command: str) -> ast.FunctionDef:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "command" and deco.args
                        and isinstance(deco.args[0], ast.Constant) and deco.args[0].value == command):
                    return node
    raise KeyError(f"no dicap command named {command!r} in {ROOT / 'cli.py'}")


def command_sources(command: str) -> tuple[list[str], set[Path]]:
    """The source text of ``command`` and the cli helpers it calls, and the modules they import."""
    tree = _parse(ROOT / "cli.py")
    helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    texts: list[str] = []
    files: set[Path] = set()
    todo, done = [_command_function(tree, command)], set()
    while todo:
        fn = todo.pop()
        if fn.name in done:
            continue
        done.add(fn.name)
        texts.append(ast.unparse(fn))
        files |= _imported_files(fn, f"{PACKAGE}.cli")
        todo += [helpers[n.func.id] for n in ast.walk(fn)
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in helpers]
    return texts, module_closure(files)


@lru_cache(maxsize=None)
def code_version(command: str) -> str:
    """A short hash of everything ``dicap <command>`` runs from this package."""
    texts, files = command_sources(command)
    digest = hashlib.sha256()
    for text in sorted(texts):
        digest.update(text.encode())
    for path in sorted(files):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]
