"""Counterfactual generation for one shard of a few-shot split, and the merge of shards.

Shard ``k`` of ``K`` owns rows ``k, k + K, ...`` of the split, so shards are balanced and a
failed shard reruns alone.  Each shard writes images (safetensors) and a row table
(Parquet); the merge checks that the shards cover the split exactly once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from dicap.backbones.diffusion import DiffusionBundle, model_to_pixels, pixels_to_model
from dicap.backbones.guides import Guide
from dicap.counterfactual import ddim
from dicap.data import scm
from dicap.data.store import DatasetStore
from dicap.runtime import device

TABLE_COLUMNS = ["row", "split", "index", "y", "y_cf", "scale", "guide", "guide_confidence", "guide_prediction", "reconstruction_mse"]


def shard_rows(split: pd.DataFrame, shard: int, shards: int) -> pd.DataFrame:
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0..{shards - 1}")
    rows = split.iloc[shard::shards].copy()
    rows.insert(0, "row", np.arange(shard, len(split), shards))
    return rows.reset_index(drop=True)


def generate(
    store: DatasetStore,
    rows: pd.DataFrame,
    targets: np.ndarray,
    diffusion: DiffusionBundle,
    guide: Guide,
    params: dict[str, Any],
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Abduction then action for ``rows``, batched; returns images and the row table."""
    dev = device()
    diffusion.unet.to(dev)
    path = ddim.timestep_path(diffusion.num_train_timesteps, params["steps"], params["inversion_depth"])
    pixels = store.pixels(rows)
    out, confidence, prediction, recon = [], [], [], []
    bs = params["batch_size"]
    for start in tqdm(range(0, len(rows), bs), desc="counterfactuals", mininterval=5):
        x0 = pixels_to_model(pixels[start : start + bs]).to(dev)
        y = torch.as_tensor(rows["label"].to_numpy()[start : start + bs], device=dev)
        y_cf = torch.as_tensor(targets[start : start + bs], device=dev)
        x_t = ddim.invert(diffusion, x0, y, path)
        x_cf = ddim.regenerate(diffusion, guide, x_t, y_cf, path, params["scale"])
        recon.append((ddim.reconstruct(diffusion, x_t, y, path) - x0).pow(2).flatten(1).mean(1).cpu().numpy())
        probs = guide.class_probs(x_cf)
        confidence.append(probs.gather(1, y_cf.cpu()[:, None]).squeeze(1).numpy())
        prediction.append(probs.argmax(1).numpy())
        out.append(model_to_pixels(x_cf))
    table = rows[["row", "split", "index"]].assign(
        y=rows["label"].to_numpy(),
        y_cf=targets,
        scale=float(params["scale"]),
        guide=params["guide"],
        guide_confidence=np.concatenate(confidence) if confidence else np.zeros(0),
        guide_prediction=np.concatenate(prediction) if prediction else np.zeros(0, np.int64),
        reconstruction_mse=np.concatenate(recon) if recon else np.zeros(0),
    )
    arrays = {"images": np.concatenate(out) if out else np.zeros((0, *pixels.shape[1:]), np.uint8)}
    if set(scm.FACTOR_COLUMNS) <= set(rows.columns):  # the embedded suite knows the truth
        arrays["true_images"] = true_counterfactuals(store, rows, targets)
    return arrays, table[TABLE_COLUMNS]


def true_counterfactuals(store: DatasetStore, rows: pd.DataFrame, targets: np.ndarray) -> np.ndarray:
    """Render ``f(y_cf, n, u)`` for each row: the counterfactual a perfect generator would give."""
    size = store.images[rows["split"].iloc[0]].shape[1] if len(rows) else 0
    images = [
        scm.render_counterfactual(store.kind, int(y_cf), scm.Factors(**{k: row[k] for k in scm.FACTOR_COLUMNS}), size)
        for y_cf, (_, row) in zip(targets, rows.iterrows())
    ]
    return np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)


def merge(parts: list[tuple[dict[str, np.ndarray], pd.DataFrame]], n_rows: int) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Concatenate shard outputs in split-row order; refuse gaps or overlaps."""
    table = pd.concat([t for _, t in parts], ignore_index=True)
    order = np.argsort(table["row"].to_numpy(), kind="stable")
    rows = table["row"].to_numpy()[order]
    if len(rows) != n_rows or not np.array_equal(rows, np.arange(n_rows)):
        raise ValueError(f"shards cover rows {sorted(set(rows.tolist()))[:10]}..., expected each of 0..{n_rows - 1} once")
    arrays = {key: np.concatenate([a[key] for a, _ in parts])[order] for key in parts[0][0]}
    return arrays, table.iloc[order].reset_index(drop=True)
