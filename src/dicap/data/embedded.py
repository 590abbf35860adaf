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
from dicap.data.store import ARRAYS, CLASSES, IMAGES, TABLE
from dicap.io import save_arrays, write_json, write_table

DATASETS = ("shapes", "digits")  # what the structural causal model renders
SEEN_GLYPHS = (0.0, 0.8)   # pretraining, the few-shot pool and validation
HELD_OUT_GLYPHS = (0.8, 1.0)  # test splits: handwriting no model has seen


def _split_plan(params: dict[str, Any]) -> dict[str, tuple[int, tuple[float, float], bool]]:
    """split -> (images per class, glyph range, anti-correlated background)."""
    return {
        "pretrain": (params["pretrain_per_class"], SEEN_GLYPHS, False),
        "train": (params["pool_per_class"], SEEN_GLYPHS, False),
        "val": (params["val_per_class"], SEEN_GLYPHS, False),
        "test_unbiased": (params["test_per_class"], HELD_OUT_GLYPHS, False),
        "test_anti": (params["test_per_class"], HELD_OUT_GLYPHS, True),
    }


def build(dataset: str, params: dict[str, Any], seed: int, out_dir: str | Path) -> None:
    """Render every split of ``dataset`` into ``out_dir``; deterministic given ``seed``."""
    classes = scm.class_names(dataset)
    size = params["image_size"]
    rng = np.random.default_rng([seed, len(dataset)] + [ord(c) for c in dataset])
    n_bg = len(scm.BACKGROUNDS)
    images: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    for split, (per_class, glyph_range, anti) in _split_plan(params).items():
        pixels = []
        labels = np.repeat(np.arange(len(classes)), per_class)
        factors = scm.sample_factors(rng, len(labels), glyph_range)
        for i, (label, f) in enumerate(tqdm(list(zip(labels, factors)), desc=f"{dataset}/{split}", mininterval=2)):
            if anti:  # any background except the one the biased training split pairs with label
                f = scm.Factors(**{**f.__dict__, "bg": int((scm.spurious_background(label) + 1 + rng.integers(n_bg - 1)) % n_bg)})
            pixels.append(scm.render(dataset, int(label), f, size))
            rows.append({
                "split": split, "index": i, "label": int(label), "class_name": classes[label],
                **f.__dict__, "caption": scm.caption(dataset, int(label), f),
            })
        images[split] = np.stack(pixels)
    out = Path(out_dir)
    save_arrays(out / IMAGES, images)
    write_table(out / TABLE, pd.DataFrame(rows))
    write_json(out / CLASSES, {"dataset": dataset, "storage": ARRAYS, "classes": classes, "image_size": size})
