"""A dataset on disk: one safetensors file of uint8 images per split plus a factor table.

The table has one row per image (``split``, ``index`` into that split's image tensor,
``label``, ``class_name`` and, for the embedded suite, the rendered factors and a caption).
Every later rule addresses images by ``(split, index)``, so the same contract serves the
embedded and the paper suite.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dicap.io import load_arrays, read_json

IMAGES = "images.safetensors"
TABLE = "factors.parquet"
CLASSES = "classes.json"


@dataclass
class DatasetStore:
    root: Path
    images: dict[str, np.ndarray]
    table: pd.DataFrame
    classes: list[str]
    kind: str

    @classmethod
    def open(cls, root: str | Path) -> "DatasetStore":
        root = Path(root)
        for name in (IMAGES, TABLE, CLASSES):
            if not (root / name).exists():
                raise FileNotFoundError(f"dataset store {root} is missing {name}; rerun its dataset rule")
        info = read_json(root / CLASSES)
        duplicates = sorted({c for c in info["classes"] if info["classes"].count(c) > 1})
        if duplicates:
            raise ValueError(f"{root / CLASSES} lists classes more than once: {duplicates}; class names must be unique")
        return cls(root, load_arrays(root / IMAGES), pd.read_parquet(root / TABLE), info["classes"], info["kind"])

    def split(self, name: str) -> pd.DataFrame:
        rows = self.table[self.table["split"] == name]
        if rows.empty:
            raise KeyError(f"dataset store {self.root} has no split {name!r}")
        return rows.reset_index(drop=True)

    def pixels(self, rows: pd.DataFrame) -> np.ndarray:
        """uint8 images (N, H, W, 3) for table rows, in row order."""
        splits, index = rows["split"].to_numpy(), rows["index"].to_numpy()
        if len(set(splits)) == 1:  # the common case: one vectorised gather
            return self.images[splits[0]][index]
        return np.stack([self.images[s][i] for s, i in zip(splits, index)])


def base_novel_split(n_classes: int) -> tuple[list[int], list[int]]:
    """Base = first ceil(n/2) labels, novel = the rest (the base-to-novel protocol)."""
    n_base = (n_classes + 1) // 2
    return list(range(n_base)), list(range(n_base, n_classes))
