"""Reading the JSON annotation files of the retrieval and VQA datasets, refusing bad ones early.

The Karpathy split files and the VQAv2 question/answer files are downloaded or placed by a
user, and a missing key or an empty caption list would otherwise surface as a ``KeyError``
deep inside a training job, far from the file that caused it.  Every check here raises
``ValueError`` with one line that names the file, the entry and the key.

Also here: how a percentage of a pool becomes a count, shared by both tasks' few-shot splits.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any


def load_json_list(path: str | os.PathLike, key: str) -> tuple[dict[str, Any], list[Any]]:
    """The whole JSON object of ``path`` and its list under ``key`` (``images``, ``questions``...)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such annotation file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a JSON file ({err})") from err
    if not isinstance(data, dict) or key not in data:
        raise ValueError(f"{path}: no top-level key '{key}'")
    if not isinstance(data[key], list) or not data[key]:
        raise ValueError(f"{path}: '{key}' must be a non-empty list")
    return data, data[key]


def require(path: str | os.PathLike, where: str, item: Any, fields: Mapping[str, type | tuple[type, ...]]) -> None:
    """``item`` (entry ``where`` of ``path``) is an object with every field of the right type;
    strings must not be blank."""
    if not isinstance(item, dict):
        raise ValueError(f"{path}: {where} is not an object")
    for field, kind in fields.items():
        if field not in item:
            raise ValueError(f"{path}: {where} has no '{field}'")
        value = item[field]
        if not isinstance(value, kind) or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
            raise ValueError(f"{path}: {where} has a bad '{field}' ({value!r})")


def refuse_duplicates(path: str | os.PathLike, field: str, values: Iterable[Any]) -> None:
    """Every value of ``field`` in ``path`` is unique (two entries for one id is a corrupt file)."""
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{path}: duplicate '{field}' {value!r}")
        seen.add(value)


def percent_count(pool: int, percent: float, rounding: str) -> int:
    """``percent`` % of ``pool`` items, computed exactly (no float drift at .5 boundaries).

    ``rounding`` is "half_up" (retrieval: it reproduces CPL's hard-coded counts, e.g. 0.5 % of
    MSCOCO's 82,783 train images = 413.9 -> 414) or "floor" (VQA: CPL's ``int(len(df) * f)``).
    """
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    exact = Fraction(str(percent)) * pool / 100
    if rounding == "half_up":
        return int(exact + Fraction(1, 2))
    if rounding == "floor":
        return int(exact)
    raise ValueError(f"unknown rounding {rounding!r}")
