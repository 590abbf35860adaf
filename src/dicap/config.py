"""Configuration is data: load ``config.yaml`` and validate it against a JSON schema.

Errors name the offending key (``prompt.epochs``) so a typo stops the run before any job
starts, instead of surfacing as a ``KeyError`` an hour into a cluster run.  Each violation
is one line naming the key, the value and what is allowed::

    config: key 'counterfactual.guidance_scale' = nan: must be a finite number >= 0

The schema also carries each key's default: :func:`with_defaults` fills in what a config
file leaves out, so ``config.paper.yaml`` holds only what the paper suite changes.

Three gaps of the plain schema check are closed here:

* JSON Schema's ``minimum`` lets NaN through (every comparison with NaN is false), and
  ``.inf`` passes any lower bound: every number must also be finite.
* Snakemake hands values inside ``--config`` lists and maps over as strings
  (``--config seeds='[1]'`` gives ``['1']``): :func:`coerce_config` reads such strings as
  ``config.yaml`` would have, where the schema wants something other than a string.
* A YAML syntax error in Snakemake's own loader names no file, line or column:
  :func:`check_yaml_syntax` does.
"""

from __future__ import annotations

import copy
import json
import math
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SCHEMA_FILE = "config.schema.yaml"
# Validators whose failure is about the value itself: reported as "= value: must be <allowed>".
_VALUE_CHECKS = {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum", "const", "pattern", "minLength"}
_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,), "number": (int, float), "boolean": (bool,), "array": (list,), "object": (dict,), "null": (type(None),),
}


class ConfigError(ValueError):
    """A configuration value that does not match the schema."""


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return yaml.safe_load(resources.files("dicap").joinpath(SCHEMA_FILE).read_text())


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _show(value: Any) -> str:
    """A value as a user would recognise it from YAML: ``nan``, ``-1``, ``'five'``, ``[]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    text = repr(value) if isinstance(value, (str, int, float)) else json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (``#/$defs/name``), keeping the referring node's own keys."""
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = schema()
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**_resolve(target), **{k: v for k, v in node.items() if k != "$ref"}}


def _types(node: dict[str, Any]) -> list[str]:
    declared = node.get("type", [])
    return [declared] if isinstance(declared, str) else list(declared)


def allowed(node: dict[str, Any]) -> str:
    """What a schema node accepts, in words: ``a finite number in (0, 0.95]``, ``one of cfg, clip``."""
    node = _resolve(node)
    if "enum" in node:
        return "one of " + ", ".join(_show(v) if not isinstance(v, str) else v for v in node["enum"])
    if "const" in node:
        return f"exactly {_show(node['const'])}"
    words = {"integer": "an integer", "number": "a finite number", "string": "a string", "boolean": "true or false",
             "array": "a list", "object": "a mapping", "null": "null"}
    text = " or ".join(words[t] for t in _types(node)) or "a value"
    lo = ("[", node["minimum"]) if "minimum" in node else ("(", node["exclusiveMinimum"]) if "exclusiveMinimum" in node else None
    hi = ("]", node["maximum"]) if "maximum" in node else (")", node["exclusiveMaximum"]) if "exclusiveMaximum" in node else None
    if lo and hi:
        text += f" in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    elif lo:
        text += f" {'>=' if lo[0] == '[' else '>'} {lo[1]}"
    elif hi:
        text += f" {'<=' if hi[0] == ']' else '<'} {hi[1]}"
    if "pattern" in node:
        text += f" matching {node['pattern']!r}" if node["pattern"] != "\\{\\}" else " containing {}"
    if "minLength" in node:
        text += " (not empty)"
    return text


@lru_cache(maxsize=1)
def _validator_class():
    """Draft 2020-12 where ``number`` means a *finite* number: NaN and infinities are refused."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "number", lambda checker, value: base.TYPE_CHECKER.is_type(value, "number") and math.isfinite(value)
    )
    return jsonschema.validators.extend(base, type_checker=checker)


def _non_finite(value: Any, path: tuple = ()):
    """Paths of every NaN or infinity in a config, also inside free-form blocks (``clip.model``)."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _non_finite(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _non_finite(v, (*path, i))


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Raise :class:`ConfigError` listing every violation, one line each, each naming its key."""
    validator = _validator_class()(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    lines: dict[str, str] = {}  # one line per key: NaN below a minimum is one mistake, not two
    for err in errors:
        key = _key(err.absolute_path)
        if err.validator == "additionalProperties":
            names = sorted(err.schema.get("properties", {}))
            for name in sorted(set(err.instance) - set(names)):
                unknown = _key([*err.absolute_path, name])
                lines.setdefault(unknown, f"{source}: unknown key '{unknown}' (allowed here: {', '.join(names)})")
        elif err.validator in _VALUE_CHECKS:
            lines.setdefault(key, f"{source}: key '{key}' = {_show(err.instance)}: must be {allowed(err.schema)}")
        elif err.validator == "required":
            missing = [name for name in err.validator_value if name not in err.instance]
            lines.setdefault(f"{key}\0required", f"{source}: key '{key}': missing required key(s) {', '.join(map(repr, missing))}")
        else:
            what = {"minItems": f"must hold at least {err.validator_value} item(s)", "uniqueItems": "must not list a value twice",
                    }.get(str(err.validator), err.message)
            lines.setdefault(f"{key}\0{err.validator}", f"{source}: key '{key}' = {_show(err.instance)}: {what}")
    for path, value in _non_finite(config):
        lines.setdefault(_key(path), f"{source}: key '{_key(path)}' = {_show(value)}: must be a finite number")
    for key, line in [*_registry_dataset_errors(config, source), *_pretrain_with_errors(config, source)]:
        lines.setdefault(key, line)
    if lines:
        raise ConfigError("\n".join(lines.values()))
    return config


def _pretrain_with_errors(config: dict[str, Any], source: str) -> list[tuple[str, str]]:
    """``clip.pretrain_with``: another world for each dataset, never the dataset's own (its
    cross-dataset table would score its own test split twice, once as a target)."""
    block = config.get("clip", {}).get("pretrain_with")
    if not isinstance(block, dict):
        return []
    return [(f"clip.pretrain_with.{d}", f"{source}: key 'clip.pretrain_with.{d}' lists {d} itself: list the other "
             "embedded datasets its CLIP also pretrains on") for d, others in block.items() if isinstance(others, list) and d in others]


REGISTRY_ENV = "DICAP_REGISTRY"
PACKAGED_REGISTRY = "data/registry.yaml"  # dicap/data/registry.yaml
CLASSIFICATION = "classification"  # a registry entry's task when it names none (a site's older copy)


def registry_file(path: str | os.PathLike | None = None) -> Path:
    """The dataset registry in use: ``path``, else ``$DICAP_REGISTRY`` (a site's own copy, say
    with a mirror's checksums), else the packaged one.  The one place that decides, so the
    config check and the data layer (:mod:`dicap.data.paper_sources`) read the same file;
    a relative ``$DICAP_REGISTRY`` is made absolute here, so a job that runs in another
    directory (``--directory``) and the error naming it mean the same file."""
    if path:
        return Path(path)
    env = os.environ.get(REGISTRY_ENV)
    return Path(os.path.abspath(env)) if env else Path(str(resources.files("dicap").joinpath(PACKAGED_REGISTRY)))


def registry_task(entry: Any) -> str:
    """A registry entry's task; classification when it names none (or is no mapping yet: the
    config reads the file before the data layer checks each entry's shape)."""
    return entry.get("task", CLASSIFICATION) if isinstance(entry, dict) else CLASSIFICATION


def registry_keys(entries: dict[str, Any], task: str = CLASSIFICATION, evaluation_only: bool = False) -> list[str]:
    """The keys of the registry's ``datasets`` entries of one task, in file order (the config's
    ``datasets`` draw from the classification ones).  A test-only target (``evaluation_only:
    true``: ImageNet-V2, -Sketch, -A, -R) is left out, as it has nothing to train on, unless
    ``evaluation_only`` asks for the targets a prompt can be scored on."""
    return [key for key, entry in entries.items() if registry_task(entry) == task
            and (evaluation_only or not (isinstance(entry, dict) and entry.get("evaluation_only")))]


def registry_classification_keys(evaluation_only: bool = False) -> tuple[str, list[str]]:
    """The registry file in use (:func:`registry_file`) and its classification keys, in file
    order (the test-only targets too with ``evaluation_only``).

    Read here as plain YAML rather than through :mod:`dicap.data.paper_sources`: the config
    sits below the data layer, and only the keys and their ``task`` are needed.  A file that
    cannot be read raises :class:`ConfigError` naming it.
    """
    path = str(registry_file())
    try:
        registry = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the dataset registry ({err.strerror}); check {REGISTRY_ENV}") from None
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error_line(path, err)) from None
    entries = registry.get("datasets") if isinstance(registry, dict) else None
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: the dataset registry has no 'datasets' mapping")
    return path, registry_keys(entries, evaluation_only=evaluation_only)


def _registry_dataset_errors(config: dict[str, Any], source: str) -> list[tuple[str, str]]:
    """The paper suite's dataset names checked against the registry actually loaded:
    ``datasets`` and, where the transfer's ``source`` is one of them (the transfer tables
    come with the source's study), the ``cross_dataset`` targets (entries with something to
    train on) and the ``domain_generalization`` targets (test-only ones too).

    Why not an enum in the schema: a lab adds its own dataset in its own registry file
    (``$DICAP_REGISTRY``), and the schema cannot know that file.  Each unknown name is one
    line naming the key, the value, the registry file and the names it defines.
    """
    if config.get("suite") != "paper":
        return []
    datasets, transfer = config.get("datasets"), config.get("transfer")
    named = {"datasets": (datasets, False)}
    if isinstance(transfer, dict) and isinstance(datasets, list) and transfer.get("source") in datasets:
        named |= {"transfer.cross_dataset": (transfer.get("cross_dataset"), False),
                  "transfer.domain_generalization": (transfer.get("domain_generalization"), True)}
    lines = []
    for key, (names, evaluation_only) in named.items():
        if not isinstance(names, list):
            continue
        try:
            path, known = registry_classification_keys(evaluation_only)
        except ConfigError as err:
            return [(key, f"{source}: key '{key}': cannot be checked: {err}")]
        what = "classification entries" + (", test-only targets included," if evaluation_only else "")
        lines += [(f"{key}.{i}", f"{source}: key '{key}.{i}' = {_show(name)}: must be one of {', '.join(map(str, known))} "
                                 f"(the {what} of {path})")
                  for i, name in enumerate(names) if isinstance(name, str) and name not in known]
    return lines


_LEAVE: dict[str, Any] = {"enum": []}  # a node under which nothing is coerced


def _number(text: str) -> int | float | str:
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


def _fits(value: Any, types: list[str]) -> bool:
    return any(isinstance(value, _TYPES[k]) and not (k in ("integer", "number") and isinstance(value, bool)) for k in types if k in _TYPES)


def _coerce(value: Any, node: dict[str, Any]) -> Any:
    node = _resolve(node)
    types = _types(node)
    free_form = not types and "enum" not in node and "const" not in node
    if isinstance(value, str) and (free_form or (types and types != ["string"])):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value  # validation names the key and what it should be
        numeric = bool({"integer", "number"} & set(types))
        if isinstance(parsed, str) and numeric:  # YAML 1.1 reads '2e-3' as a string; Python does not
            parsed = _number(parsed)
        if not isinstance(parsed, str) and (free_form or _fits(parsed, types) or (numeric and _fits(parsed, ["number"]))):
            value = parsed  # 2.5 for an integer stays 2.5, so the error shows the number given
    if isinstance(value, dict):
        props = node.get("properties")
        if props is None:  # a free-form block (clip.model): read throughout as YAML would
            return {k: _coerce(v, {}) for k, v in value.items()}
        return {k: _coerce(v, props.get(k, _LEAVE)) for k, v in value.items()}  # unknown keys: validation names them
    if isinstance(value, list):
        return [_coerce(v, node.get("items", {} if free_form else _LEAVE)) for v in value]
    return value


def coerce_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with strings read as YAML where the schema wants a non-string.

    Why: Snakemake parses each ``--config key=value`` with YAML's *base* loader, so every
    value inside a list or a mapping arrives as a string (``seeds='[1]'`` -> ``['1']``,
    ``'counterfactual={shards: 4}'`` -> ``{'shards': '4'}``).  Reading such a string as
    ``config.yaml`` would (``yaml.safe_load``) gives the value the user wrote; it is kept
    only if it has a type the schema allows there, so ``'five'`` stays a string and is
    refused by :func:`validate_config`, naming the key.  Keys the schema allows to be a
    string are never changed; free-form blocks (``clip.model``) are read as YAML throughout.
    """
    return _coerce(config, schema())


def _fill(value: Any, node: dict[str, Any]) -> Any:
    node = _resolve(node)
    if not isinstance(value, dict):
        return value  # not a mapping where one belongs: validation names the key
    for name, child in node.get("properties", {}).items():
        child = _resolve(child)
        if name not in value:
            if "default" in child:
                value[name] = copy.deepcopy(child["default"])
            elif any("default" in _resolve(c) for c in child.get("properties", {}).values()):
                value[name] = {}  # a block whose keys have defaults (counterfactual, prompt, ...)
            else:
                continue
        value[name] = _fill(value[name], child)
    return value


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with every key it leaves out and the schema gives a default filled in.

    A block given in part keeps its own values and gets the defaults of the rest, key by key;
    a block whose default is a whole mapping (a ``train`` block, ``clip.model``) is taken whole
    when it is missing and left alone when it is given.
    """
    return _fill(copy.deepcopy(config), schema())


def yaml_error_line(path: str | Path, err: yaml.YAMLError) -> str:
    """``file:line:column: problem`` for a YAML syntax error (1-based, as editors count)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    hint = "; indent YAML with spaces, never tabs" if "'\\t'" in problem else ""
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "") + hint


def check_yaml_syntax(path: str | Path) -> None:
    """Raise :class:`ConfigError` naming file, line and column if ``path`` is not valid YAML.

    Snakemake's own loader says only "Config file is not valid JSON or YAML"; the workflow
    calls this before its ``configfile:`` directive.  A missing file is left to Snakemake.
    """
    path = Path(path)
    if not path.is_file():
        return
    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error_line(path, err)) from None


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error_line(path, err)) from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return validate_config(with_defaults(config), str(path))


def validate_config_file(config: Path, /) -> None:
    """Check a config file against the schema (``dicap validate-config FILE``)."""
    load_config(config)
    print(f"{config}: valid")


def as_json(obj: Any) -> str:
    """Canonical JSON for passing a parameter block to a job through ``params:``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
