"""A dataset on disk: a table of images plus the images themselves.

The table has one row per image (``split``, ``index`` within that split, ``label``,
``class_name`` and, for the embedded suite, the rendered factors and a caption).  Every
later rule addresses images by table rows and gets uint8 pixels from :meth:`pixels`, so
the same contract serves both suites: the embedded suite stores its rendered images in
one safetensors file (``storage: arrays``), the paper suite (``storage: files``) keeps the
downloaded files and records each row's ``path`` relative to ``image_root`` in
``classes.json``.  The file names are :mod:`dicap.layout`'s.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dicap.data import scm
from dicap.io import load_arrays, read_json, read_table
from dicap.layout import STORE_CLASSES as CLASSES
from dicap.layout import STORE_IMAGES as IMAGES
from dicap.layout import STORE_TABLE as TABLE
from dicap.layout import STORE_TEXTS as TEXTS

# The embedded suite's test splits: unbiased, and every test object on every background, from
# which evaluation picks each seed's aligned and conflict rows (data/embedded.py renders them).
BACKGROUND_GRID = "test_backgrounds"
TEST_SPLITS = ("test_unbiased", BACKGROUND_GRID)
ARRAYS = "arrays"  # storage: every image in one safetensors file (the embedded suite)
FILES = "files"  # storage: the images are files on disk (the paper suite)
DATA_ROOT_ENV = "DICAP_DATA_ROOT"  # this machine's data.root, against which a files store's image_root resolves


@dataclass
class DatasetStore:
    root: Path
    images: dict[str, np.ndarray]
    table: pd.DataFrame
    classes: list[str]
    dataset: str  # its name: an embedded one (shapes, digits) or a registry key (dtd, ...)
    storage: str  # ARRAYS or FILES
    image_root: Path | None = None  # storage FILES: where the table's paths start
    image_size: int | None = None  # storage FILES: side of the square images pixels() returns
    render_seed: int | None = None  # rendered data: the seed it was rendered with
    world_pairing: list[int] | None = None  # rendered with a pretraining class-background correlation: its pairing
    spurious_factor: str = scm.DEFAULT_SPURIOUS_FACTOR  # rendered data: the factor its pairing and paired test split vary
    task: str = "classification"  # the data contract: classification, or retrieval / vqa (data/text_store.py)
    evaluation_only: bool = False  # a test-only target (ImageNet-V2, -Sketch, -A, -R): no train split, every class scored
    imagenet_labels: list[int] | None = None  # such a target: each class's ImageNet index (labels are 0..n-1 among its own classes)
    declared_test_splits: list[str] | None = None  # classes.json's test_splits (the shift store, data/shifts.py), else the fixed ones

    @classmethod
    def open(cls, root: str | Path) -> "DatasetStore":
        root = Path(root)
        for name in (TABLE, CLASSES):
            if not (root / name).exists():
                raise FileNotFoundError(f"dataset store {root} is missing {name}; rerun its dataset rule")
        info = read_json(root / CLASSES)
        duplicates = sorted({c for c in info["classes"] if info["classes"].count(c) > 1})
        if duplicates:
            raise ValueError(f"{root / CLASSES} lists classes more than once: {duplicates}; class names must be unique")
        table = read_table(root / TABLE)
        if info["storage"] == FILES:
            return cls(root, {}, table, info["classes"], info["dataset"], FILES, files_image_root(root, info), int(info["image_size"]),
                       task=info.get("task", "classification"), evaluation_only=bool(info.get("evaluation_only")),
                       imagenet_labels=info.get("imagenet_labels"))
        if not (root / IMAGES).exists():
            raise FileNotFoundError(f"dataset store {root} is missing {IMAGES}; rerun its dataset rule")
        declared = info.get("test_splits")
        if missing := [s for s in declared or [] if s not in set(table["split"])]:
            raise ValueError(f"{root / CLASSES} lists test split {missing[0]!r}, which {root / TABLE} does not have; rerun its dataset rule")
        return cls(root, load_arrays(root / IMAGES), table, info["classes"], info["dataset"], ARRAYS,
                   render_seed=info.get("render_seed"), world_pairing=info.get("world_pairing"),
                   spurious_factor=info.get("spurious_factor", scm.DEFAULT_SPURIOUS_FACTOR), declared_test_splits=declared)

    @property
    def texts(self) -> pd.DataFrame:
        """A retrieval store's captions (``texts.parquet``: image_id, caption_index, caption, split)."""
        if not (self.root / TEXTS).exists():
            raise FileNotFoundError(f"dataset store {self.root} has no {TEXTS}: it is not a retrieval dataset's store")
        return read_table(self.root / TEXTS)

    @property
    def is_text_task(self) -> bool:
        """A retrieval or VQA dataset of its own (the paper suite's), rather than classification data."""
        return self.task != "classification"

    @property
    def base_classes(self) -> list[int]:
        """The labels prompts are trained on: the first half (see :func:`base_novel_split`)."""
        return base_novel_split(len(self.classes))[0]

    @property
    def novel_classes(self) -> list[int]:
        return base_novel_split(len(self.classes))[1]

    def pairing(self, seed: int) -> list[int]:
        """Each class's paired background for training seed ``seed`` (rendered data only).

        Drawn per seed, so no single chance class-colour affinity sits in every seed's
        numbers; a world whose pretraining already pairs classes with backgrounds
        (``data.pretrain_spurious_strength``) keeps that one pairing for every seed.
        """
        if self.world_pairing is not None:
            return list(self.world_pairing)
        if self.render_seed is None:
            raise ValueError(f"dataset store {self.root} was not rendered: it has no class-background pairing")
        return scm.draw_pairing([self.render_seed, seed], [self.base_classes, self.novel_classes])

    def spurious_levels(self, rows: pd.DataFrame) -> np.ndarray:
        """Each row's level of the spurious factor (its background by default): what :meth:`pairing` pairs."""
        return scm.factor_levels(self.spurious_factor, rows)

    @property
    def test_splits(self) -> list[str]:
        """The splits scored: those ``classes.json`` lists (the shift store's, one per shift), else the
        embedded suite's unbiased one and its background grid, or a real dataset's ``test``."""
        if self.declared_test_splits is not None:
            return list(self.declared_test_splits)
        present = set(self.table["split"])
        return [name for name in (*TEST_SPLITS, "test") if name in present]

    @property
    def transfer_splits(self) -> list[str]:
        """The splits a transfer target is scored on: a shift store's shifts, else its first test
        split (the unbiased one; a real dataset's only one).  The embedded background grid is the
        shortcut study's, not a domain."""
        return self.test_splits if self.declared_test_splits is not None else self.test_splits[:1]

    def transfer_domain(self, split: str, target: str) -> str:
        """The column a transfer target's split reports in: a shift store's shift, else the target."""
        return split if self.declared_test_splits is not None else target

    def split(self, name: str) -> pd.DataFrame:
        rows = self.table[self.table["split"] == name]
        if rows.empty:
            raise KeyError(f"dataset store {self.root} has no split {name!r}")
        return rows.reset_index(drop=True)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of every image :meth:`pixels` returns."""
        if self.storage == FILES:
            return (int(self.image_size), int(self.image_size), 3)
        return tuple(next(iter(self.images.values())).shape[1:])  # type: ignore[return-value]

    def image_path(self, relative: str) -> Path:
        """A table row's file, refused if it resolves (links followed) outside ``image_root``:
        a hand-edited table or a link in the dataset folder must not make a job read elsewhere."""
        from dicap.guards import contained

        return contained(self.image_root, relative, f"image of dataset store {self.root}")

    def pixels(self, rows: pd.DataFrame) -> np.ndarray:
        """uint8 images (N, H, W, 3) for table rows, in row order."""
        if self.storage == FILES:
            from dicap.data.images import load_images

            return load_images([self.image_path(p) for p in rows["path"]], self.image_size)
        if len(rows) == 0:  # an empty shard: (0, H, W, 3), not np.stack's "need at least one array"
            return np.zeros((0, *self.image_shape), np.uint8)
        splits, index = rows["split"].to_numpy(), rows["index"].to_numpy()
        if len(set(splits)) == 1:  # the common case: one vectorised gather
            return self.images[splits[0]][index]
        return np.stack([self.images[s][i] for s, i in zip(splits, index)])


def recorded_image_root(dataset_dir: str | Path, entry: dict) -> str:
    """What a ``files`` store records as its image root: ``<dataset folder>/<entry's image_root>``,
    relative to the data root (the dataset folder's parent), never absolute, so a store built on
    a cluster and pulled elsewhere resolves on that machine (:func:`files_image_root`)."""
    return posixpath.normpath(f"{Path(dataset_dir).name}/{Path(entry.get('image_root', '.')).as_posix()}")


def files_image_root(root: Path, info: dict) -> Path:
    """Where a ``files`` store's images are on this machine.

    The store records its image root relative to ``data.root`` (``dtd/dtd/images``), so a
    store built on a cluster and pulled elsewhere resolves against the local data root,
    ``$DICAP_DATA_ROOT`` (rules/data.smk sets it from ``data.root`` for every job).  Older
    stores recorded an absolute path, which is used as is.
    """
    recorded = Path(info["image_root"])
    if recorded.is_absolute():
        return recorded
    if ".." in recorded.parts:
        raise ValueError(f"{root / CLASSES}: image_root {info['image_root']!r} leaves the data root; refused")
    data_root = os.environ.get(DATA_ROOT_ENV)
    if not data_root:
        raise ValueError(f"{root / CLASSES}: image_root {info['image_root']!r} is relative to data.root; "
                         f"set {DATA_ROOT_ENV} to this machine's data.root (the workflow does)")
    return Path(data_root) / recorded


def base_novel_split(n_classes: int) -> tuple[list[int], list[int]]:
    """Base = first ceil(n/2) labels, novel = the rest (the base-to-novel protocol)."""
    n_base = (n_classes + 1) // 2
    return list(range(n_base)), list(range(n_base, n_classes))
