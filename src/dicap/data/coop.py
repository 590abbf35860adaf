"""A downloaded benchmark dataset -> the store table, with CoOp's train/val/test splits.

CoOp fixed one train/val/test split per dataset in its ``split_zhou_<Name>.json`` files
(entries ``[relative path, label, class name]``); results are only comparable on those, so
they are read whenever the registry names one.  Two datasets have none: FGVCAircraft
ships its own ``images_variant_{train,val,test}.txt`` and ImageNet its train/val folders
(val is the test set, as in CoOp).  The domain-generalization targets (``evaluation_only``:
ImageNet-V2, -Sketch, -A, -R) have only a test split, labelled by their registry entry's label
map (:mod:`dicap.data.imagenet_variants`).  For a dataset folder without any split file the same
rule as CoOp's ``read_and_split_data`` applies - per class, 50% train, 20% val, the rest
test - with a seeded shuffle, so the split is deterministic (CoOp's own depends on
Python's global random state).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dicap.data.imagenet_variants import CLASS_NAMES, TargetClass, read_classnames, target_classes
from dicap.data.store import CLASSES, FILES, TABLE, recorded_image_root
from dicap.guards import contained
from dicap.io import write_json, write_table

Entry = tuple[str, int, str]  # (path relative to the image root, label, class name)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def read_split_zhou(path: str | Path) -> dict[str, list[Entry]]:
    """The ``train``/``val``/``test`` lists of a CoOp split file."""
    data = json.loads(Path(path).read_text())
    missing = {"train", "val", "test"} - set(data)
    if missing:
        raise ValueError(f"{path} is not a CoOp split file: no {sorted(missing)} list")
    return {name: [(str(p), int(label), str(cname)) for p, label, cname in data[name]] for name in ("train", "val", "test")}


def split_by_folders(image_root: Path, p_train: float = 0.5, p_val: float = 0.2, seed: int = 0) -> dict[str, list[Entry]]:
    """CoOp's rule for a ``<class>/<image>`` tree without a split file, made deterministic."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[Entry]] = {"train": [], "val": [], "test": []}
    classes = sorted(p.name for p in image_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for label, name in enumerate(classes):
        images = sorted(f"{name}/{f.name}" for f in (image_root / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        images = [images[i] for i in rng.permutation(len(images))]
        n_train, n_val = round(len(images) * p_train), round(len(images) * p_val)
        for split, chunk in (("train", images[:n_train]), ("val", images[n_train : n_train + n_val]), ("test", images[n_train + n_val :])):
            out[split] += [(p, label, name.replace("_", " ")) for p in chunk]
    return out


def split_fgvc_aircraft(data_dir: Path) -> dict[str, list[Entry]]:
    """FGVCAircraft's own variant-level split: ``images_variant_<split>.txt`` lines ``<id> <variant>``."""
    variants = [line.strip() for line in (data_dir / "variants.txt").read_text().splitlines() if line.strip()]
    label = {v: i for i, v in enumerate(variants)}
    out: dict[str, list[Entry]] = {}
    for split in ("train", "val", "test"):
        lines = (data_dir / f"images_variant_{split}.txt").read_text().splitlines()
        out[split] = [(f"{image_id}.jpg", label[v], v) for image_id, v in (line.strip().split(" ", 1) for line in lines if line.strip())]
    return out


def split_imagenet(dataset_dir: Path, image_root: Path) -> dict[str, list[Entry]]:
    """ImageNet as CoOp reads it: ``downloads/classnames.txt`` (``<wnid> <name>``), train and val folders; val is the test set."""
    pairs = list(read_classnames(dataset_dir / "downloads" / CLASS_NAMES).items())

    def folder(split: str) -> list[Entry]:
        return [
            (f"{split}/{wnid}/{f.name}", label, name)
            for label, (wnid, name) in enumerate(pairs)
            for f in sorted((image_root / split / wnid).iterdir())
        ]

    test = folder("val")
    return {"train": folder("train"), "val": test, "test": test}


def evaluation_classes(entry: dict[str, Any], dataset_dir: Path) -> list[TargetClass]:
    """An ``evaluation_only`` entry's classes in label order, named by its ``downloads/classnames.txt``."""
    return target_classes(entry["classes"], entry.get("class_folders", "wnid"), dataset_dir / "downloads" / CLASS_NAMES)


def split_evaluation_only(entry: dict[str, Any], dataset_dir: Path, image_root: Path) -> dict[str, list[Entry]]:
    """A test-only target: every image of every class folder is test, labelled 0..n-1 by the label map.

    The folders must be exactly the label map's: a folder it does not name (ImageNet-R's
    folders read with ImageNet-A's map) or a class without a folder (an archive cut short)
    stops the job naming them, rather than scoring a silently different class set.
    """
    classes = evaluation_classes(entry, dataset_dir)
    expected = {c.folder for c in classes}
    present = {p.name for p in image_root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    stray, absent = sorted(present - expected), sorted(expected - present)
    if stray or absent:
        raise ValueError(f"{image_root}: the class folders do not match label map {entry['classes']!r} of registry entry "
                         f"{entry.get('key') or dataset_dir.name} ({len(stray)} not in it, e.g. {stray[:3]}; "
                         f"{len(absent)} of its classes missing, e.g. {absent[:3]})")
    return {"test": [(f"{c.folder}/{f.name}", label, c.name) for label, c in enumerate(classes)
                     for f in sorted((image_root / c.folder).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]}


def dataset_splits(entry: dict[str, Any], dataset_dir: Path) -> tuple[Path, dict[str, list[Entry]]]:
    """The image root and CoOp splits of one registry entry, downloaded into ``dataset_dir``.

    The image root and the split file must lie inside ``dataset_dir`` (links followed): a
    registry entry (``$DICAP_REGISTRY`` may be a user's own) cannot point a job elsewhere.
    """
    key = entry.get("key")
    image_root = contained(dataset_dir, entry.get("image_root", "."), f"registry entry {key or dataset_dir.name}: image_root")
    split_file = entry.get("split_file")
    if split_file:
        where = f"registry entry {key or dataset_dir.name}: split_file"
        # a downloaded split file sits in downloads/; a local folder's beside its images, as in CoOp's $DATA
        base = dataset_dir if entry.get("local") else dataset_dir / "downloads"
        return image_root, read_split_zhou(contained(base, split_file, where))
    if entry.get("evaluation_only"):
        return image_root, split_evaluation_only(entry, dataset_dir, image_root)
    if key == "fgvc_aircraft":
        return image_root, split_fgvc_aircraft(image_root.parent)
    if key == "imagenet":
        return image_root, split_imagenet(dataset_dir, image_root)
    return image_root, split_by_folders(image_root)


def class_names(splits: dict[str, list[Entry]], source: str) -> list[str]:
    """Names by label; a label named two ways, or a gap in the labels, is an error naming ``source``."""
    names: dict[int, str] = {}
    for entries in splits.values():
        for _, label, name in entries:
            if names.setdefault(label, name) != name:
                raise ValueError(f"{source}: label {label} is called both {names[label]!r} and {name!r}")
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{source}: labels are not 0..{len(names) - 1}")
    return [names[i] for i in range(len(names))]


def build_store(entry: dict[str, Any], dataset_dir: str | Path, image_size: int, out: str | Path) -> pd.DataFrame:
    """Write the store (table + classes.json, storage ``files``) for a downloaded dataset.

    ``classes.json`` records the image root relative to the data root (``dataset_dir``'s
    parent: ``<key>/<image_root>``), never an absolute path, so a store pulled onto another
    machine resolves against that machine's ``data.root`` (``$DICAP_DATA_ROOT``, which the
    workflow sets; :func:`dicap.data.store.files_image_root`).

    Every image the split names must exist: a missing one stops the job naming it, rather
    than failing hours later inside a GPU job.  Every one must also resolve (links followed)
    inside the image root: a split file naming ``../x`` or ``/etc/passwd``, or a link in a
    folder tree placed by hand, stops the job naming the path.
    """
    given = Path(dataset_dir)
    if entry.get("key"):  # the same rule as the download job: a link here must be declared in the registry
        from dicap.data.paper_sources import dataset_folder

        dataset_folder(given.parent, given.name, entry)
    relative_root = recorded_image_root(given, entry)
    dataset_dir = given.resolve()
    image_root, splits = dataset_splits(entry, dataset_dir)
    for entries in splits.values():
        for p, _, _ in entries:
            contained(image_root, p, f"image named by the split of {dataset_dir.name}")
    classes = class_names(splits, str(dataset_dir))
    missing = [p for entries in splits.values() for p, _, _ in entries if not (image_root / p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} images named by the split are missing under {image_root}, e.g. {missing[:3]}; "
            "re-download the dataset (delete its READY.json)"
        )
    table = pd.DataFrame(_rows(splits))
    out = Path(out)
    write_table(out / TABLE, table)
    write_json(out / CLASSES, {"classes": classes, "dataset": entry.get("key") or dataset_dir.name, "storage": FILES,
                              "image_root": relative_root, "image_size": image_size, **_evaluation_info(entry, dataset_dir)})
    return table


def _evaluation_info(entry: dict[str, Any], dataset_dir: Path) -> dict[str, Any]:
    """What a test-only target's classes.json adds: its label map and each class's ImageNet index and wnid."""
    if not entry.get("evaluation_only"):
        return {}
    classes = evaluation_classes(entry, dataset_dir)
    return {"evaluation_only": True, "label_map": entry["classes"],
            "imagenet_labels": [c.imagenet_label for c in classes], "wnids": [c.wnid for c in classes]}


def _rows(splits: dict[str, list[Entry]]) -> Iterable[dict[str, Any]]:
    for split, entries in splits.items():
        for index, (path, label, name) in enumerate(entries):
            yield {"split": split, "index": index, "label": label, "class_name": name, "path": path}
