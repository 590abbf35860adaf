"""The domain-generalization targets' classes: ImageNet-V2, -Sketch, -A and -R as ImageNet labels.

The four targets are test sets of ImageNet's own classes (CoOp's domain-generalization
setting: prompts learned on ImageNet, scored unchanged).  V2 and Sketch hold all 1,000
classes, A and R a 200-class subset each; their folders name a class either by its WordNet id
(``sketch/n01440764/``) or, for V2, by its ImageNet class index (``.../0/`` .. ``.../999/``).
Their registry entries say which (``classes``: a label map of ``imagenet_labels.yaml``,
``class_folders``: ``wnid`` or ``index``), and the class names are CoOp's ``classnames.txt``
(``<wnid> <name>`` per line, ImageNet index order), fetched into each target's own downloads/
so a target does not depend on ImageNet's licence-gated download.

A target's classes are numbered 0..n-1 in ImageNet index order -- CoOp's numbering (its
imagenet_a.py and imagenet_r.py number the sorted wnid folders, which is the same order) --
so a 200-class target is scored among its own 200 class prompts; :func:`target_classes` also
gives each class's ImageNet index, which the store records (``imagenet_labels``) for anything
that must address ImageNet's 1,000 classes (a prompt learned per ImageNet class).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import yaml

LABELS = Path(__file__).with_name("imagenet_labels.yaml")
LABEL_MAPS = ("imagenet", "imagenet_a", "imagenet_r")  # the ``classes:`` a registry entry may name
CLASS_FOLDERS = ("wnid", "index")  # how a target's folders name a class
CLASS_NAMES = "classnames.txt"  # CoOp's ImageNet class names, a file of every target's downloads/
N_IMAGENET = 1000


class TargetClass(NamedTuple):
    """One class of a target: its folder under the image root, CoOp's name, ImageNet's index and wnid."""

    folder: str
    name: str
    imagenet_label: int
    wnid: str


@lru_cache(maxsize=1)
def label_maps() -> dict[str, tuple[str, ...]]:
    """Each label map's wnids (``imagenet``: all 1,000 in index order; the subsets in that order).

    Checked on read: a hand edit that breaks a list (a duplicate, a wnid outside ImageNet, a
    subset out of index order) fails here naming the list, not as a wrong accuracy later.
    """
    maps = yaml.load(LABELS.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # C loader: 1,400 ids
    imagenet = maps.get("imagenet") if isinstance(maps, dict) else None
    if set(maps or {}) != set(LABEL_MAPS) or not isinstance(imagenet, list):
        raise ValueError(f"{LABELS}: expected the label maps {', '.join(LABEL_MAPS)}, got {sorted(maps or {})}")
    if len(imagenet) != N_IMAGENET or len(set(imagenet)) != N_IMAGENET or imagenet != sorted(imagenet):
        raise ValueError(f"{LABELS}: imagenet must list 1,000 distinct wnids in sorted (class index) order")
    index = {wnid: i for i, wnid in enumerate(imagenet)}
    for name in LABEL_MAPS[1:]:
        wnids = maps[name]
        outside = [w for w in wnids if w not in index]
        if outside or len(set(wnids)) != len(wnids) or wnids != sorted(wnids, key=index.__getitem__):
            raise ValueError(f"{LABELS}: {name} must list distinct ImageNet wnids in index order"
                             + (f" ({outside[:3]} are not ImageNet's)" if outside else ""))
    return {name: tuple(maps[name]) for name in LABEL_MAPS}


def wnids(classes: str) -> tuple[str, ...]:
    """The wnids of one label map, in ImageNet index order."""
    maps = label_maps()
    if classes not in maps:
        raise ValueError(f"unknown label map {classes!r}; expected one of {LABEL_MAPS}")
    return maps[classes]


def read_classnames(path: str | Path) -> dict[str, str]:
    """CoOp's ``classnames.txt``: wnid -> class name, one ``<wnid> <name>`` per line."""
    pairs = [line.strip().split(" ", 1) for line in Path(path).read_text().splitlines() if line.strip()]
    bad = [" ".join(p) for p in pairs if len(p) != 2]
    if bad:
        raise ValueError(f"{path}: not CoOp's classnames.txt (a line without '<wnid> <name>': {bad[0]!r})")
    return dict(pairs)


def target_classes(classes: str, class_folders: str, classnames: str | Path) -> list[TargetClass]:
    """The classes of a target whose registry entry names label map ``classes`` and folder
    naming ``class_folders``, in label order (0..n-1), with CoOp's names from ``classnames``."""
    if class_folders not in CLASS_FOLDERS:
        raise ValueError(f"class_folders {class_folders!r}: expected one of {CLASS_FOLDERS}")
    names = read_classnames(classnames)
    imagenet = {wnid: i for i, wnid in enumerate(wnids("imagenet"))}
    chosen = wnids(classes)
    missing = [w for w in chosen if w not in names]
    if missing:
        raise ValueError(f"{classnames} names no class for {len(missing)} of the {len(chosen)} wnids of {classes}, "
                         f"e.g. {missing[:3]}; it is not CoOp's ImageNet classnames.txt")
    return [TargetClass(wnid if class_folders == "wnid" else str(imagenet[wnid]), names[wnid], imagenet[wnid], wnid)
            for wnid in chosen]
