"""Counterfactual generation for the rows of one shard: abduction, then guided action."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from dicap.backbones.diffusion import DiffusionBundle
from dicap.backbones.guides import Guide
from dicap.counterfactual import ddim
from dicap.counterfactual.shards import GENERATED, TRUE, UNGUIDED
from dicap.data import scm
from dicap.data.store import DatasetStore
from dicap.runtime import device

# counterfactual.reconstruction_fraction: the share of each batch whose s = 1 round trip is
# measured.  Params built by hand (tests, benchmarks) that leave it out measure every row, as
# the schema's default does.
RECONSTRUCTION_KEY = "reconstruction_fraction"
log = logging.getLogger(__name__)
TABLE_COLUMNS = ["row", "split", "index", "y", "y_cf", "guidance_scale", "guide", "sampling", "guide_confidence", "guide_prediction", "reconstruction_mse"]


def generate(
    store: DatasetStore,
    rows: pd.DataFrame,
    targets: np.ndarray,
    diffusion: DiffusionBundle,
    guide: Guide,
    params: dict[str, Any],
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Abduction then action for ``rows``, batched; returns images and the row table.

    ``diffusion`` is a pixel-space ``DiffusionBundle`` or a ``LatentDiffusionBundle``: images
    go into its space with ``to_model`` and come back with ``to_pixels`` at the dataset's
    own size, so ``reconstruction_mse`` is measured in that space (latents for a latent model).
    Abduction inverts with the guide's own abduction score, the one its action starts from
    (backbones/guides.py), and the round trip regenerates at the guide's
    ``abduction_scale`` towards ``y``: the action that changes nothing.  It is a diagnostic
    that costs a quarter of the UNet evaluations under classifier-free guidance, so only the
    first :func:`reconstructed_rows` rows of each batch are measured; the others get NaN.  It
    never touches the counterfactuals themselves.  When the dataset knows its factors (the
    embedded suite), the arrays also hold the true counterfactuals and an unguided (s = 0)
    regeneration from the same abduction, the audit's two references.
    ``guide_confidence`` and ``guide_prediction`` are the guide's own posterior: a
    diagnostic of the guide, never a quality score (the sampler optimised exactly it).
    """
    dev = device()
    audited = set(scm.FACTOR_COLUMNS) <= set(rows.columns)
    diffusion.to(dev)
    guide.to(dev)  # a guide's own networks (classifier, CLIP) follow the diffusion model
    path = ddim.timestep_path(diffusion.num_train_timesteps, params["steps"], params["inversion_depth"])
    pixels = store.pixels(rows)
    size = tuple(pixels.shape[1:3])
    out, unguided, confidence, prediction, recon = [], [], [], [], []
    bs, fraction = params["batch_size"], params.get(RECONSTRUCTION_KEY, 1.0)
    batches, started = math.ceil(len(rows) / bs), time.monotonic()
    for start in range(0, len(rows), bs):
        x0 = diffusion.to_model(pixels[start : start + bs]).to(dev)
        y = torch.tensor(rows["label"].to_numpy()[start : start + bs], device=dev)
        y_cf = torch.tensor(targets[start : start + bs], device=dev)
        batch = f"batch {start // bs + 1}/{batches} ({len(x0)} images)"
        log.info("%s: abduction, DDIM inversion over %d steps (%.0f s so far)", batch, len(path) - 1, time.monotonic() - started)
        x_t = ddim.invert(diffusion, guide, x0, y, path)
        log.info("%s: action, regeneration towards y_cf at guidance %g (%.0f s so far)", batch, params["guidance_scale"],
                 time.monotonic() - started)
        x_cf = ddim.regenerate(diffusion, guide, x_t, y_cf, path, params["guidance_scale"])
        recon.append(reconstruction_mse(diffusion, guide, x0, x_t, y, path, reconstructed_rows(len(x0), fraction)))
        probs = guide.class_probs(x_cf)
        confidence.append(probs.gather(1, y_cf.cpu()[:, None]).squeeze(1).numpy())
        prediction.append(probs.argmax(1).numpy())
        out.append(diffusion.to_pixels(x_cf, size))
        if audited:
            unguided.append(diffusion.to_pixels(ddim.regenerate_unguided(diffusion, x_t, path), size))
    log.info("%d counterfactuals in %d batches, %.0f s", len(rows), batches, time.monotonic() - started)
    table = rows[["row", "split", "index"]].assign(
        y=rows["label"].to_numpy(),
        y_cf=targets,
        guidance_scale=float(params["guidance_scale"]),
        guide=params["guide"],
        sampling=params["sampling"],
        guide_confidence=np.concatenate(confidence) if confidence else np.zeros(0),
        guide_prediction=np.concatenate(prediction) if prediction else np.zeros(0, np.int64),
        reconstruction_mse=np.concatenate(recon) if recon else np.zeros(0),
    )
    empty = np.zeros((0, *pixels.shape[1:]), np.uint8)
    arrays = {GENERATED: np.concatenate(out) if out else empty}
    if audited:  # the embedded suite knows the truth
        arrays[TRUE] = true_counterfactuals(store, rows, targets)
        arrays[UNGUIDED] = np.concatenate(unguided) if unguided else empty
    return arrays, table[TABLE_COLUMNS]


def reconstructed_rows(n: int, fraction: float) -> int:
    """How many of a batch's ``n`` rows get the round-trip diagnostic: ``ceil(fraction * n)``.

    The first rows of every batch, so the sample is deterministic, spread over the shard, and
    non-empty in every batch whenever ``fraction > 0``.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"{RECONSTRUCTION_KEY} must be in [0, 1], got {fraction}")
    return min(n, math.ceil(fraction * n))


def reconstruction_mse(
    diffusion: DiffusionBundle, guide: Guide, x0: torch.Tensor, x_t: torch.Tensor, y: torch.Tensor, path: list[int],
    measured: int,
) -> np.ndarray:
    """Per-row MSE of the round trip (:func:`ddim.reconstruct`) for the first ``measured`` rows;
    NaN (not measured) after."""
    out = np.full(len(x0), np.nan, dtype=np.float32)
    if measured:
        back = ddim.reconstruct(diffusion, guide, x_t[:measured], y[:measured], path)
        out[:measured] = (back - x0[:measured]).pow(2).flatten(1).mean(1).cpu().numpy()
    return out


def true_counterfactuals(store: DatasetStore, rows: pd.DataFrame, targets: np.ndarray) -> np.ndarray:
    """Render ``f(y_cf, n, u)`` for each row: the counterfactual a perfect generator would give."""
    size = store.image_shape[0]  # also for an empty shard, whose (0, H, W, 3) must concatenate with the others
    images = [
        scm.render_counterfactual(store.dataset, int(y_cf), scm.Factors(**{k: row[k] for k in scm.FACTOR_COLUMNS}), size)
        for y_cf, (_, row) in zip(targets, rows.iterrows())
    ]
    return np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
