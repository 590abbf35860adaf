"""Few-shot training splits, per seed, over the classes a variant trains on.

As in CoOp, K images per class are drawn per seed: of the base classes (base-to-novel), or
of every class for the ``all_classes`` variant (the cross-dataset recipe since CoCoOp);
:func:`trained_classes` says which, for the split, the prompts and the counterfactual
targets.  The embedded suite additionally biases the draw: a ``spurious_strength`` share of
each class's shots have the background colour paired with that class (the level of the
store's spurious factor, ``data.spurious_factor``: background, object colour, scale or
position), so a model that leans on it is caught by the anti-correlated test split.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dicap import layout
from dicap.data import scm

if TYPE_CHECKING:
    from dicap.data.store import DatasetStore


def few_shot(
    pool: pd.DataFrame,
    classes: Iterable[int],
    shots: int,
    seed: int,
    spurious_strength: float | None = None,
    pairing: list[int] | None = None,
    factor: str = scm.DEFAULT_SPURIOUS_FACTOR,
) -> pd.DataFrame:
    """Pick ``shots`` rows per class of ``classes`` from ``pool``, deterministically per seed.

    With ``spurious_strength``, that share of each class's shots carry its ``pairing``
    level of ``factor`` (the seed's: :meth:`DatasetStore.pairing`; a background by default)
    and the rest any other.
    """
    if spurious_strength is not None and pairing is None:
        raise ValueError("a spurious draw needs each class's paired background (DatasetStore.pairing)")
    rng = np.random.default_rng(seed)
    picked = []
    for label in classes:
        rows = pool[pool["label"] == label]
        if spurious_strength is None:
            groups = [(rows, shots)]
        else:
            spurious = scm.factor_levels(factor, rows) == pairing[label]
            n_spurious = int(round(spurious_strength * shots))
            groups = [(rows[spurious], n_spurious), (rows[~spurious], shots - n_spurious)]
        for group, n in groups:
            if len(group) < n:
                raise ValueError(
                    f"class {label} has {len(group)} candidate images, fewer than the {n} shots asked for; "
                    "lower 'data.shots' or raise 'data.pool_per_class'"
                )
            picked.append(group.iloc[np.sort(rng.choice(len(group), size=n, replace=False))])
    return pd.concat(picked).reset_index(drop=True)


CLASS_SETS = ("base", "all")  # layout.Variant.classes: what a split holds and a learner learns


def class_set(store: "DatasetStore", classes: str) -> list[int]:
    """The labels of ``classes`` (``base``: the first half, ``all``: every class)."""
    if classes not in CLASS_SETS:
        raise ValueError(f"unknown class set {classes!r}: expected one of {', '.join(CLASS_SETS)}")
    return store.base_classes if classes == "base" else list(range(len(store.classes)))


def trained_classes(store: "DatasetStore", variant: str) -> list[int]:
    """The labels ``variant`` trains on, in label order: its shots', its learner's and its y_cf's."""
    return class_set(store, layout.parse_variant(variant).classes)


def training_split(store: "DatasetStore", shots: int, seed: int, spurious_strength: float | None = None,
                   classes: str = "base") -> pd.DataFrame:
    """The few-shot training split of one seed: the shots of its ``classes`` (``base`` or ``all``).

    As in CoOp the shots are drawn over all classes before the base/novel split; drawing
    class by class in label order, the base classes' picks are the same either way (so the
    ``all`` split holds the ``base`` split's rows).  The embedded suite's spurious draw is
    defined for the classes that train only (a novel class's pool need not hold enough
    images of its paired level), so it draws there.
    """
    kept = class_set(store, classes)
    drawn = kept if spurious_strength is not None else range(len(store.classes))
    pairing = store.pairing(seed) if spurious_strength is not None else None
    split = few_shot(store.split("train"), drawn, shots, seed, spurious_strength, pairing, store.spurious_factor)
    return split[split["label"].isin(kept)].reset_index(drop=True)
