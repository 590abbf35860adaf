"""Render an embedded dataset (``shapes`` or ``digits``) from the structural causal model.

This is the embedded suite's "download": it writes the same store a real dataset's
download-and-prepare rule writes, plus every image's factors and a caption.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from dicap.data import scm
from dicap.data.store import ARRAYS, CLASSES, IMAGES, TABLE, TEST_SPLITS, base_novel_split
from dicap.io import save_arrays, write_json, write_table

DATASETS = ("shapes", "digits")  # what the structural causal model renders
SEEN_GLYPHS = (0.0, 0.8)   # pretraining, the few-shot pool and validation
HELD_OUT_GLYPHS = (0.8, 1.0)  # test splits: handwriting no model has seen
# The shortcut splits: the same test objects rendered twice, on their class's paired
# background (aligned) and on another class's (conflict), so their accuracy gap is the
# shortcut alone.  Both cover base and novel classes (each half has its own pairing).
ALIGNED, CONFLICT = TEST_SPLITS[1:]


def _split_plan(params: dict[str, Any]) -> dict[str, tuple[int, tuple[float, float]]]:
    """split -> (images per class, glyph range); the conflict split reuses the aligned split's objects."""
    return {
        "pretrain": (params["pretrain_per_class"], SEEN_GLYPHS),
        "train": (params["pool_per_class"], SEEN_GLYPHS),
        "val": (params["val_per_class"], SEEN_GLYPHS),
        "test_unbiased": (params["test_per_class"], HELD_OUT_GLYPHS),
        ALIGNED: (params["test_per_class"], HELD_OUT_GLYPHS),
    }


def _background(split: str, label: int, i: int, f: scm.Factors, pairing: list[int], group: list[int],
                pretrain_paired: bool) -> int:
    """The background a split renders: drawn freely, the paired one, or a conflict one."""
    if split == ALIGNED or (split == "pretrain" and pretrain_paired):
        return pairing[label]
    if split == CONFLICT:
        return scm.conflict_background(label, i, pairing, group)
    return f.bg


def build(dataset: str, params: dict[str, Any], seed: int, out_dir: str | Path) -> None:
    """Render every split of ``dataset`` into ``out_dir``; deterministic given ``seed``.

    ``data.pretrain_spurious_strength`` of the pretraining images carry their class's paired
    background (the web's class-context correlation, which gives a shortcut learned on base
    classes a path to novel ones).  It draws from its own generator, so at 0 every split is
    the same as without it.
    """
    classes = scm.class_names(dataset)
    size = params["image_size"]
    rng = np.random.default_rng([seed, len(dataset)] + [ord(c) for c in dataset])
    groups = list(base_novel_split(len(classes)))
    group_of = {c: g for g in groups for c in g}
    pairing = scm.draw_pairing(seed, groups)
    paired_draw = np.random.default_rng([seed, 7])
    images: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    for split, (per_class, glyph_range) in _split_plan(params).items():
        labels = np.repeat(np.arange(len(classes)), per_class)
        factors = scm.sample_factors(rng, len(labels), glyph_range)
        renders = [(split, factors)] + ([(CONFLICT, factors)] if split == ALIGNED else [])
        for name, drawn in renders:
            pixels = []
            for i, (label, f) in enumerate(tqdm(list(zip(labels, drawn)), desc=f"{dataset}/{name}", mininterval=2)):
                paired = name == "pretrain" and paired_draw.random() < params.get("pretrain_spurious_strength", 0.0)
                bg = _background(name, int(label), i % per_class, f, pairing, group_of[int(label)], paired)
                f = scm.Factors(**{**f.__dict__, "bg": bg})
                pixels.append(scm.render(dataset, int(label), f, size))
                rows.append({
                    "split": name, "index": i, "label": int(label), "class_name": classes[label],
                    **f.__dict__, "caption": scm.caption(dataset, int(label), f),
                })
            images[name] = np.stack(pixels)
    out = Path(out_dir)
    save_arrays(out / IMAGES, images)
    write_table(out / TABLE, pd.DataFrame(rows))
    write_json(out / CLASSES, {"dataset": dataset, "storage": ARRAYS, "classes": classes, "image_size": size,
                               "paired_background": pairing})
