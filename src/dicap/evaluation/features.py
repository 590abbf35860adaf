"""Frozen CLIP features of a store's splits, encoded once and cached: evaluation (every test
split of a dataset) and transfer (a target's test splits, by the source dataset's CLIP) read them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dicap.data.store import DatasetStore


def encode_splits(store: "DatasetStore", clip_dir: Path, splits: list[str], out: Path, threads: int = 1) -> None:
    """Cache the frozen CLIP features of ``splits`` of ``store`` and their labels (and the
    background grid's spurious levels, by which evaluation picks each seed's rows)."""
    import numpy as np

    from dicap import runtime
    from dicap.backbones.clip import load_clip
    from dicap.data.store import BACKGROUND_GRID
    from dicap.guards import check_finite
    from dicap.io import save_arrays

    runtime.setup(threads, 0)
    bundle = load_clip({"path": str(clip_dir)})
    bundle.model.to(runtime.device())
    out_arrays: dict[str, np.ndarray] = {}
    for name in splits:
        rows = store.split(name)
        out_arrays[name] = bundle.encode_rows(store, rows)
        out_arrays[f"{name}_labels"] = rows["label"].to_numpy()
        if name == BACKGROUND_GRID:  # evaluation picks each seed's aligned and conflict rows by background (spurious factor)
            out_arrays[f"{name}_bg"] = store.spurious_levels(rows)
    check_finite(out, out_arrays)
    save_arrays(out, out_arrays)

