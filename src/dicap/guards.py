"""Guards at the data contracts: a job refuses to write an output that is non-finite or
degenerate, and a dataset cannot make a job read outside its own folder.

Why here and not only in the config schema: a bad value can also come from a diverged
optimiser, a corrupt input or a guide that saturates, and once NaN features or all-black
counterfactuals are written, every downstream job runs "successfully" on them (argmax of
NaN logits is a perfectly finite accuracy).  Each check raises :class:`ValueError` naming
the file and what is wrong; the CLI turns it into one error line and exit status 1, and
the caller has not written anything yet.  Only numpy is imported, so cheap jobs stay cheap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def check_finite(where: str | os.PathLike, arrays: Mapping[str, Any], source: str | os.PathLike | None = None) -> None:
    """Refuse NaN or infinity in any floating array (torch tensors are accepted too).

    ``where`` is the output the job was about to write; ``source`` the input the arrays came
    from, when they were read rather than computed (a prompt file, cached features).
    """
    for name, value in arrays.items():
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if not np.issubdtype(array.dtype, np.floating) or array.size == 0:
            continue
        bad = ~np.isfinite(array)
        if bad.any():
            n_nan = int(np.isnan(array).sum())
            raise ValueError(
                f"{where}: not written: {name!r}{f' from {source}' if source else ''} holds {n_nan} NaN and {int(bad.sum()) - n_nan} infinite values "
                f"out of {array.size} (shape {tuple(array.shape)})"
            )


def check_table_finite(where: str | os.PathLike, table: "pandas.DataFrame", not_measured: tuple[str, ...] = ()) -> None:  # noqa: F821
    """Refuse NaN or infinity in any float column of a table about to be written.

    In the ``not_measured`` columns NaN is the documented "not measured" mark (a diagnostic
    taken on a sample of rows), so only infinity is refused there.
    """
    from pandas.api.types import is_float_dtype

    columns = {col: table[col].to_numpy(dtype=float) for col in table.columns if is_float_dtype(table[col].dtype)}
    check_finite(where, {col: np.nan_to_num(v, nan=0.0, posinf=np.inf, neginf=-np.inf) if col in not_measured else v
                         for col, v in columns.items()})


def check_not_constant(where: str | os.PathLike, name: str, array: np.ndarray) -> None:
    """Refuse a non-empty set of images that are all one value (e.g. all black): what a NaN
    guidance step or a diverged generator leaves after the cast to uint8."""
    array = np.asarray(array)
    if array.size and (array == array.flat[0]).all():
        raise ValueError(
            f"{where}: not written: all {len(array)} {name} are one constant value ({array.flat[0]}); "
            "the generator diverged (check counterfactual.guidance_scale and the diffusion backbone)"
        )


def contained(root: str | os.PathLike, path: str | os.PathLike, what: str = "path") -> Path:
    """``root / path`` resolved (symlinks followed); refused unless it stays inside ``root``.

    A split file or folder tree placed by hand can name ``../../etc/passwd``, an absolute
    path, or hold a link to elsewhere; a job must never read such a file as an image.
    """
    base = Path(root).resolve()
    full = (base / path).resolve()
    if full != base and base not in full.parents:
        raise ValueError(f"{what} {str(path)!r} resolves to {full}, outside the dataset root {base}; refused")
    return full
