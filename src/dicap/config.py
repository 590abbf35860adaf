"""Configuration is data: load ``config.yaml`` and validate it against a JSON schema.

Errors name the offending key (``prompt.epochs``) so a typo stops the run before any job
starts, instead of surfacing as a ``KeyError`` an hour into a cluster run.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SCHEMA_FILE = "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration value that does not match the schema."""


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return yaml.safe_load(resources.files("dicap").joinpath(SCHEMA_FILE).read_text())


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Raise :class:`ConfigError` listing every violation, each naming its key."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = []
        for err in errors:
            if err.validator == "additionalProperties":
                allowed = sorted(err.schema.get("properties", {}))
                unknown = sorted(set(err.instance) - set(allowed))
                for name in unknown:
                    lines.append(f"{source}: unknown key '{_key([*err.absolute_path, name])}' (allowed here: {', '.join(allowed)})")
            else:
                lines.append(f"{source}: key '{_key(err.absolute_path)}': {err.message}")
        raise ConfigError("\n".join(lines))
    return config


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return validate_config(config, str(path))


def as_json(obj: Any) -> str:
    """Canonical JSON for passing a parameter block to a job through ``params:``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
