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
from dicap.data.store import ARRAYS, BACKGROUND_GRID, CLASSES, IMAGES, TABLE, base_novel_split
from dicap.io import save_arrays, write_json, write_table

DATASETS = ("shapes", "digits")  # what the structural causal model renders
SEEN_GLYPHS = (0.0, 0.8)   # pretraining, the few-shot pool and validation
HELD_OUT_GLYPHS = (0.8, 1.0)  # test splits: handwriting no model has seen


def _split_plan(params: dict[str, Any]) -> dict[str, tuple[int, tuple[float, float]]]:
    """split -> (objects per class, glyph range)."""
    return {
        "pretrain": (params["pretrain_per_class"], SEEN_GLYPHS),
        "train": (params["pool_per_class"], SEEN_GLYPHS),
        "val": (params["val_per_class"], SEEN_GLYPHS),
        "test_unbiased": (params["test_per_class"], HELD_OUT_GLYPHS),
        BACKGROUND_GRID: (params["test_per_class"], HELD_OUT_GLYPHS),
    }


CAPTION_NOISE_KEYS = ("template_variety", "synonym_share", "unnamed_share", "label_noise")
# Every key of the config's data block that :func:`build` (and prepare_dataset, for the seed)
# reads: prepare_dataset's params are these and no more, so a key of the few-shot draw
# (shots, spurious_strength) redraws the splits and leaves the renders and backbones alone.
RENDER_KEYS = ("image_size", "pretrain_per_class", "pool_per_class", "val_per_class", "test_per_class",
               "pretrain_spurious_strength", "spurious_factor", "render_seed", "downstream_style",
               "pretrain_style_share", *CAPTION_NOISE_KEYS)


def _styled(split: str, f: scm.Factors, params: dict[str, Any], style_draw: np.random.Generator) -> scm.Factors:
    """The downstream splits in the downstream style; a ``pretrain_style_share`` of pretraining too."""
    style = scm.STYLES.index(params.get("downstream_style", "photo"))
    if split == "pretrain":
        style = style if style_draw.random() < params.get("pretrain_style_share", 0.0) else 0
    return scm.Factors(**{**f.__dict__, "style": style})


def _renders(split: str, label: int, f: scm.Factors, world: list[int], paired_draw: np.random.Generator,
             strength: float, factor: str) -> list[scm.Factors]:
    """The factor settings one drawn object is rendered with in ``split``.

    The background grid renders it at every level of the spurious ``factor`` (every background
    by default), so the aligned and conflict rows of any pairing (one per training seed) score
    the very same objects.
    """
    if split == BACKGROUND_GRID:
        return [scm.at_level(factor, f, level) for level in range(scm.LEVELS)]
    if split == "pretrain" and paired_draw.random() < strength:
        return [scm.at_level(factor, f, world[label])]
    return [f]


def build(dataset: str, params: dict[str, Any], seed: int, out_dir: str | Path) -> None:
    """Render every split of ``dataset`` into ``out_dir``; deterministic given ``seed``.

    ``data.pretrain_spurious_strength`` of the pretraining images carry their class's
    background in a pairing drawn from the render seed (the web's class-context correlation,
    which gives a shortcut learned on base classes a path to novel ones); the few-shot bias
    then follows that same pairing on every seed (:meth:`DatasetStore.pairing`).  It draws
    from its own generator, so at 0 every split is the same as without it.

    ``data.spurious_factor`` (:data:`scm.SPURIOUS_FACTORS`, background by default) is the factor
    that pairing and the paired test renders vary; ``classes.json`` names it unless it is the
    background, so a store rendered before the key existed reads the same.
    """
    classes = scm.class_names(dataset)
    size = params["image_size"]
    rng = np.random.default_rng([seed, len(dataset)] + [ord(c) for c in dataset])
    strength = params.get("pretrain_spurious_strength", 0.0)
    factor = scm.check_factor(params.get("spurious_factor", scm.DEFAULT_SPURIOUS_FACTOR))
    world = scm.draw_pairing(seed, list(base_novel_split(len(classes))))
    paired_draw = np.random.default_rng([seed, 7])
    style_draw = np.random.default_rng([seed, 11])
    noise = {k: params.get(k, 0.0) for k in CAPTION_NOISE_KEYS}
    images: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    for split, (per_class, glyph_range) in _split_plan(params).items():
        labels = np.repeat(np.arange(len(classes)), per_class)
        factors = scm.sample_factors(rng, len(labels), glyph_range)
        pixels = []
        for label, drawn in tqdm(list(zip(labels, factors)), desc=f"{dataset}/{split}", mininterval=2):
            drawn = _styled(split, drawn, params, style_draw)
            for f in _renders(split, int(label), drawn, world, paired_draw, strength, factor):
                pixels.append(scm.render(dataset, int(label), f, size))
                rows.append({
                    "split": split, "index": len(pixels) - 1, "label": int(label), "class_name": classes[label],
                    **f.__dict__, "caption": scm.web_caption(dataset, int(label), f, noise) if split == "pretrain" else scm.caption(dataset, int(label), f),
                })
        images[split] = np.stack(pixels)
    out = Path(out_dir)
    save_arrays(out / IMAGES, images)
    write_table(out / TABLE, pd.DataFrame(rows))
    write_json(out / CLASSES, {"dataset": dataset, "storage": ARRAYS, "classes": classes, "image_size": size,
                               "render_seed": seed, "world_pairing": world if strength > 0 else None,
                               **({} if factor == scm.DEFAULT_SPURIOUS_FACTOR else {"spurious_factor": factor})})
