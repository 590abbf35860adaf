"""The counterfactual generator's quality over guidance scale and abduction depth (embedded suite).

The audit judges the counterfactuals of one setting, ``counterfactual.guidance_scale`` and
``counterfactual.inversion_depth``.  Whether that setting is a good one, or one step from a
cliff, only a sweep shows: this module inverts a few fixed images of a few-shot split once per
depth, regenerates them at every guidance scale with the configured guide, and has the
audit's oracle and frozen CLIP judge each result exactly as the audit does
(:func:`dicap.audit.scoring.oracle_verdicts`, the cosine to the true counterfactual).  The
factual image's cosine to the true counterfactual is the reference line a counterfactual must
clear ("no action").
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from dicap.audit.divergence import cosine_distance
from dicap.audit.scoring import TRUTH_COLUMNS, oracle_verdicts
from dicap.backbones.diffusion import DiffusionBundle
from dicap.backbones.guides import Guide
from dicap.counterfactual import ddim
from dicap.counterfactual.generate import true_counterfactuals
from dicap.counterfactual.sampling import choose_targets
from dicap.data.store import DatasetStore
from dicap.runtime import device



def curve_rows(split: pd.DataFrame, n: int, base_classes: list[int], seed: int, strategy: str,
               text_features: np.ndarray | None = None, image_features: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """``n`` rows spread evenly over ``split`` (a split is often ordered by class: its first
    rows would be one or two classes), each with the ``y_cf`` the counterfactual shards give it:
    ``counterfactual.sampling`` over the whole split, as in jobs/counterfactuals.py.  With other
    targets (a random class where the run picks the nearest one) the curve's point at the
    config's own setting would judge other pairs than the audit, and its cosines would not
    compare.  Deterministic, so every setting and every run sees the same pairs."""
    if n < 1:
        raise ValueError(f"report.curve_images must be at least 1, got {n}")
    pick = np.unique(np.linspace(0, max(len(split) - 1, 0), min(n, len(split))).round().astype(int))
    rows = split.iloc[pick].reset_index(drop=True)
    rows.insert(0, "row", pick)
    targets = choose_targets(split["label"].to_numpy(), base_classes, strategy, seed, text_features, image_features)
    return rows, targets[pick]


def generator_curve(
    store: DatasetStore,
    rows: pd.DataFrame,
    targets: np.ndarray,
    diffusion: DiffusionBundle,
    guide: Guide,
    oracle: Any,
    clip: Any,
    scales: Sequence[float],
    depths: Sequence[float],
    steps: int,
    batch_size: int = 64,
) -> pd.DataFrame:
    """One row per image and setting (``guidance_scale`` x ``inversion_depth``): the oracle's
    verdicts (``valid``, ``faithful``, ``valid_bg_kept``, each factor kept, ...) and
    ``clip_cosine_to_true``, beside the image's ``factual_clip_cosine_to_true``.

    Abduction does not depend on the guidance scale: each depth inverts once and every scale
    regenerates from the same noise, so the curve's differences along a line are the action's
    alone.  ``oracle`` is the audit's :class:`~dicap.audit.oracle.OracleNet`, ``clip`` the
    dataset's frozen :class:`~dicap.backbones.clip.ClipBundle`.
    """
    dev = device()
    diffusion.to(dev)
    guide.to(dev)
    pixels = store.pixels(rows)
    size = tuple(pixels.shape[1:3])
    truth = rows[TRUTH_COLUMNS]
    true_features = clip.encode_images(true_counterfactuals(store, rows, targets)).numpy()
    factual_cosine = 1 - cosine_distance(clip.encode_images(pixels).numpy(), true_features)
    batches = [(diffusion.to_model(pixels[i : i + batch_size]).to(dev),
                torch.tensor(rows["label"].to_numpy()[i : i + batch_size], device=dev),
                torch.tensor(targets[i : i + batch_size], device=dev)) for i in range(0, len(rows), batch_size)]
    frames = []
    for depth in depths:
        path = ddim.timestep_path(diffusion.num_train_timesteps, steps, depth)
        inverted = [(ddim.invert(diffusion, guide, x0, y, path), y_cf) for x0, y, y_cf in batches]
        for scale in scales:
            parts = [diffusion.to_pixels(ddim.regenerate(diffusion, guide, x_t, y_cf, path, scale), size) for x_t, y_cf in inverted]
            images = np.concatenate(parts) if parts else np.zeros((0, *pixels.shape[1:]), np.uint8)
            frames.append(pd.DataFrame({
                "row": rows["row"].to_numpy(), "y": rows["label"].to_numpy(), "y_cf": targets,
                "guidance_scale": float(scale), "inversion_depth": float(depth),
                **oracle_verdicts(oracle, images, truth, targets),
                "clip_cosine_to_true": 1 - cosine_distance(clip.encode_images(images).numpy(), true_features),
                "factual_clip_cosine_to_true": factual_cosine,
            }))
    return pd.concat(frames, ignore_index=True)

