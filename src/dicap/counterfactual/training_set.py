"""What a variant trains on: the few-shot rows and the counterfactuals it uses (generated, true, or none).

Feature caching and the learners that encode pixels themselves (MaPLe) read the same rows
and counterfactual targets through this one function, so the two paths cannot disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dicap import layout
from dicap.counterfactual.shards import GENERATED, TRUE
from dicap.io import load_arrays, read_table


def training_set(
    split: Path,
    variant: str,
    counterfactual_images: Path | None,
    counterfactual_table: Path | None,
) -> dict[str, Any]:
    """The few-shot rows and labels, and the variant's counterfactual images (uint8) and targets.

    Encoded once by the `encode_train_features` job, or fed as images to a learner that runs
    the vision tower itself (MaPLe).
    """
    wanted = layout.parse_variant(variant).counterfactuals
    given = counterfactual_images is not None and counterfactual_table is not None
    if (counterfactual_images is None) != (counterfactual_table is None) or (wanted == "none" and given):
        raise ValueError(f"variant {variant!r} trains on {wanted!r} counterfactuals: give --counterfactual-images and "
                         "--counterfactual-table together, and only to a variant that trains on some")
    rows = read_table(split)
    out = {"train": rows, "train_labels": rows["label"].to_numpy()}
    # None given to a variant that could train on some: the plan found no method of it that
    # does (Plan.counterfactual_variant), and the trainer refuses a DiCap method without them.
    if wanted != "none" and given:
        key = TRUE if wanted == "true" else GENERATED
        arrays = load_arrays(counterfactual_images)
        if key not in arrays:
            raise KeyError(f"{counterfactual_images} holds no {key!r} (it has: {', '.join(arrays)})")
        out["cf"] = arrays[key]
        table = read_table(counterfactual_table)
        out["cf_labels"] = table["y_cf"].to_numpy()
        if "edited" in table:  # a text dataset: a text naming no object has no counterfactual
            out["cf_valid"] = table["edited"].to_numpy(dtype=bool)
    return out

