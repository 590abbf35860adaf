"""``dicap <job>``: the console entry point every Snakemake rule calls, under the rule's own name.

A job is the function of that name in the job module of its rule file: rule
``counterfactual_shard`` of rules/counterfactuals.smk runs ``dicap counterfactual_shard``, which is
``dicap.jobs.counterfactuals.counterfactual_shard``.
Its parameters are the command's options (``dataset_dir`` -> ``--dataset-dir``), read from
the signature and its type hints, so this module only parses arguments and dispatches.  A
job name may be written with hyphens (``dicap validate-config``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import sys
import types
import typing
from typing import Any, Callable

from dicap import runtime  # noqa: F401  (imported first: it puts every job offline, HF_HUB_OFFLINE)
from dicap import worker

log = logging.getLogger("dicap")

# Every rule's job: one module per rule file (docs/architecture.md), in the workflow's order.
JOB_MODULES = tuple(f"dicap.jobs.{name}" for name in (
    "data", "backbones", "counterfactuals", "features", "prompts", "evaluate", "transfer", "tasks", "audit", "report", "ablations"))
# Commands that are no rule's job: name -> (module, function).
TOOLS = {"record_reference": ("dicap.tools", "record_reference"), "readme_results": ("dicap.tools", "readme_results"),
         "validate_config": ("dicap.config", "validate_config_file"), "serve": ("dicap.cli", "serve"),
         "budget": ("dicap.tools", "budget")}
ERRORS = (ValueError, KeyError, FileNotFoundError, OSError)  # one line on stderr and exit status 1


def jobs() -> dict[str, Callable[..., None]]:
    """Command name -> function: each job module's ``__all__``, then the tools."""
    found: dict[str, Callable[..., None]] = {}
    for name in JOB_MODULES:
        module = importlib.import_module(name)
        for job in module.__all__:
            if job in found:
                raise RuntimeError(f"job {job!r} is defined twice ({name})")
            found[job] = getattr(module, job)
    for job, (module, function) in TOOLS.items():
        found[job] = getattr(importlib.import_module(module), function)
    return found


def _option(param: inspect.Parameter, hint: Any) -> tuple[list[str], dict[str, Any]]:
    """One ``add_argument`` call from a parameter: ``Annotated`` strings are its help, a
    callable in it its argparse type; ``list[X]`` takes one or more values; ``dict`` is JSON."""
    metadata: tuple[Any, ...] = ()
    if typing.get_origin(hint) is typing.Annotated:
        hint, *rest = typing.get_args(hint)
        metadata = tuple(rest)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:  # X | None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    kwargs: dict[str, Any] = {"help": " ".join(m for m in metadata if isinstance(m, str)) or None}
    if hint is bool:
        kwargs["action"] = "store_true"
    else:
        if typing.get_origin(hint) is list:
            kwargs["nargs"] = "+"
            hint = typing.get_args(hint)[0]
        is_dict = hint is dict or typing.get_origin(hint) is dict
        kwargs["type"] = next((m for m in metadata if callable(m)), json.loads if is_dict else hint)
        if param.default is param.empty:
            kwargs["required"] = param.kind is not param.POSITIONAL_ONLY
        else:
            kwargs["default"] = param.default
    if param.kind is param.POSITIONAL_ONLY:
        kwargs.pop("required", None)
        return [param.name], kwargs
    return ["--" + param.name.replace("_", "-")], kwargs


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """``dicap JOB --option ...`` for every job, or for job ``only`` alone when that names one:
    a job's own command line need not build the other 43 (25 ms of every job)."""
    top = argparse.ArgumentParser(prog="dicap", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True, metavar="JOB")
    found = jobs()
    wanted = (only or "").replace("-", "_")
    for name, fn in ({wanted: found[wanted]} if wanted in found else found).items():
        doc = inspect.getdoc(fn) or ""
        aliases = [name.replace("_", "-")] if "_" in name else []
        p = sub.add_parser(name, aliases=aliases, help=doc.splitlines()[0] if doc else None, description=doc)
        p.set_defaults(job=fn)
        hints = typing.get_type_hints(fn, include_extras=True)
        for param in inspect.signature(fn).parameters.values():
            flags, kwargs = _option(param, hints[param.name])
            p.add_argument(*flags, **kwargs)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run a job: in the local run's warm worker when there is one, else in this process."""
    argv = sys.argv[1:] if argv is None else list(argv)
    status = worker.delegate(argv)
    return run(argv) if status is None else status


def run(argv: list[str]) -> int:
    from dicap import layout
    from dicap.io import CorruptArtifact, discard_corrupt  # here: `dicap` hands most jobs on before numpy loads

    args = vars(parser(argv[0] if argv else None).parse_args(argv))
    args.pop("command")
    job = args.pop("job")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    positional = [args.pop(p.name) for p in inspect.signature(job).parameters.values() if p.kind is p.POSITIONAL_ONLY]
    try:
        job(*positional, **args)
    except CorruptArtifact as err:  # a damaged input: removed if the workflow made it
        log.error("%s", discard_corrupt(err, layout.folder_output(err.path)))
        return 1
    except ERRORS as err:
        log.error("%s", err)
        return 1
    return 0


def serve(socket: str, idle_timeout: float = 3600.0, parent: int | None = None) -> None:
    """Serve jobs warm on the Unix socket ``socket`` (a local run starts this; see dicap.worker)."""
    worker.serve(socket, run, idle_timeout, parent)


if __name__ == "__main__":
    sys.exit(main())
