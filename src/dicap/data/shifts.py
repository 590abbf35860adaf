"""The embedded suite's domain-generalization test store: the same classes, shifted one factor at a time.

Each split is named after one non-causal factor (:data:`SHIFTS`) and renders the same test
objects with that factor, and only it, at values that neither pretraining nor any downstream
split shows: unseen background colours, unseen object colours, a style pretraining never
shows, or six times the pixel noise.  The splits share their objects, so one method's
accuracy across them is a paired comparison and each factor's effect is its own column.

The objects come from a generator of their own (never the main store's draws, which stay
byte-identical), with held-out glyphs and the downstream style, like the main test splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dicap.data import scm
from dicap.data.embedded import HELD_OUT_GLYPHS
from dicap.data.store import ARRAYS, CLASSES, IMAGES, TABLE
from dicap.io import save_arrays, write_json, write_table

SHIFTS = ("background", "object_colour", "style", "noise")
# The same objects unshifted, rendered first: the in-domain column each shift's drop is read against.
UNSHIFTED = "unshifted"
UNSHOWN_STYLES = ("outline", "negative")  # styles no split shows: the style shift takes the first not downstream
_STREAM = 0xD65  # the shift store's own generator, apart from every draw of embedded.build


def check_shifts(shifts: list[str] | tuple[str, ...]) -> list[str]:
    """``shifts`` as a list, refused if empty, repeated or naming an unknown shift."""
    if unknown := [s for s in shifts if s not in SHIFTS]:
        raise ValueError(f"unknown shift {unknown[0]!r}; known: {', '.join(SHIFTS)}")
    if not shifts or len(set(shifts)) != len(shifts):
        raise ValueError(f"shifts must name each of {', '.join(SHIFTS)} at most once and at least one; got {list(shifts)}")
    return list(shifts)


def shift_style(downstream_style: str) -> str:
    """The style of the style shift: one that neither pretraining nor the downstream splits show."""
    return next(s for s in UNSHOWN_STYLES if s != downstream_style)


def _shifted(shift: str, f: scm.Factors, unseen: tuple[int, int], style: int) -> tuple[scm.Factors, float]:
    """``f`` with ``shift``'s factor moved to its unseen value, and the pixel noise to render it with."""
    bg, fg = unseen
    if shift == UNSHIFTED:
        return f, scm.PIXEL_NOISE_STD
    if shift == "background":
        return scm.Factors(**{**f.__dict__, "bg": scm.LEVELS + bg}), scm.PIXEL_NOISE_STD
    if shift == "object_colour":
        return scm.Factors(**{**f.__dict__, "fg": scm.LEVELS + fg}), scm.PIXEL_NOISE_STD
    if shift == "style":
        return scm.Factors(**{**f.__dict__, "style": style}), scm.PIXEL_NOISE_STD
    return f, scm.UNSEEN_NOISE_STD


def build(dataset: str, params: dict[str, Any], seed: int, out_dir: str | Path,
          shifts: list[str] | tuple[str, ...] = SHIFTS, per_class: int = 20) -> None:
    """Render one split per shift of ``dataset``'s test objects into ``out_dir``; deterministic given ``seed``.

    Reads ``image_size`` and ``downstream_style`` from ``params``.  Every object and its unseen
    colours are drawn whichever shifts are asked for, so a split is the same in any selection.
    The :data:`UNSHIFTED` split comes first, the same objects as they are.  ``classes.json``
    lists the splits as ``test_splits``, which :attr:`DatasetStore.test_splits` returns.
    """
    shifts = check_shifts(shifts)
    classes = scm.class_names(dataset)
    size = params["image_size"]
    downstream = params.get("downstream_style", "photo")
    base_style, style = scm.STYLES.index(downstream), scm.STYLES.index(shift_style(downstream))
    rng = np.random.default_rng([seed, _STREAM, len(dataset)] + [ord(c) for c in dataset])
    labels = np.repeat(np.arange(len(classes)), per_class)
    objects = [scm.Factors(**{**f.__dict__, "style": base_style}) for f in scm.sample_factors(rng, len(labels), HELD_OUT_GLYPHS)]
    unseen = rng.integers(scm.LEVELS, size=(len(labels), 2)).tolist()  # each object's unseen background and object colour
    images: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    for shift in (UNSHIFTED, *shifts):
        pixels = []
        for label, drawn, levels in zip(labels.tolist(), objects, unseen):
            f, noise_std = _shifted(shift, drawn, tuple(levels), style)
            pixels.append(scm.render(dataset, label, f, size, noise_std))
            rows.append({"split": shift, "index": len(pixels) - 1, "label": label, "class_name": classes[label],
                         **f.__dict__, "noise_std": noise_std, "caption": scm.caption(dataset, label, f)})
        images[shift] = np.stack(pixels)
    out = Path(out_dir)
    save_arrays(out / IMAGES, images)
    write_table(out / TABLE, pd.DataFrame(rows))
    write_json(out / CLASSES, {"dataset": dataset, "storage": ARRAYS, "classes": classes, "image_size": size,
                               "render_seed": seed, "test_splits": [UNSHIFTED, *shifts]})
