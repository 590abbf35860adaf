"""Per-image audit of generated counterfactuals against the truth the embedded SCM knows.

Each generated counterfactual is judged on four axes, never by the guide that made it:

* *validity* - the independent oracle classifies it as ``y_cf`` (an image it reads as "no
  object", ``no_object``, never is);
* *preservation* - the oracle's factor estimates (background colour, object colour,
  position, scale) still match the factual image's true factors;
* *distance to the true counterfactual* ``f(y_cf, n, u)`` - per-pixel MSE and SSIM, and the
  cosine of the frozen CLIP's image features (``clip_cosine_to_true``): the space the prompt
  learners train in, so the audit measures what training uses;
* *minimality* - Diff-SCM's Counterfactual Latent Divergence (``cld``,
  :mod:`dicap.audit.divergence`) in that same CLIP feature space, against the store's
  ``train`` split as the pool of real images.

The same scores are computed for two references: the true counterfactual itself (what a
perfect generator would get: the oracle's own ceiling) and an unguided regeneration
(s = 0, from the same abduction).  ``valid_bg_kept`` (valid *and* the background kept: the
background is the shortcut the counterfactuals are there to break) and ``faithful`` (valid
*and* all four factors kept) are our composites.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dicap import layout
from dicap.audit import oracle as oracle_lib
from dicap.audit.divergence import cld, cosine_distance
from dicap.audit.similarity import mse, ssim
from dicap.counterfactual.shards import GENERATED, TRUE, UNGUIDED
from dicap.data.store import DatasetStore
from dicap.io import read_table

FACTORS = ("background", "object_colour", "position", "scale")
TRUTH_COLUMNS = ["bg", "fg", "cx", "cy", "scale"]
# image set -> column prefix; the generated counterfactuals carry no prefix.
IMAGE_SETS = {GENERATED: "", TRUE: "true_", UNGUIDED: "unguided_"}
CLD_POOL = "train"  # the store split whose real images make CLD's S_f and S_cf: the few-shot draws' pool


def audit_counterfactuals(
    store: DatasetStore,
    split: pd.DataFrame,
    arrays: dict[str, np.ndarray],
    table: pd.DataFrame,
    oracle: "oracle_lib.OracleNet",
    clip: Any,
) -> pd.DataFrame:
    """One row per counterfactual: validity, preservation, distances and CLD, plus references.

    ``clip`` is the dataset's frozen :class:`~dicap.backbones.clip.ClipBundle`, whose image
    features are the latent space of ``clip_cosine_to_true`` and ``cld``.
    """
    missing = [key for key in IMAGE_SETS if key not in arrays]
    if missing:
        raise KeyError(f"counterfactuals lack {missing}: only datasets with known factors (the embedded suite) can be audited")
    factual_rows = split.iloc[table["row"].to_numpy()].reset_index(drop=True)
    truth = factual_rows[TRUTH_COLUMNS]
    factual = store.pixels(factual_rows)
    y, y_cf = table["y"].to_numpy(), table["y_cf"].to_numpy()
    pool = store.split(CLD_POOL)
    pool_features = clip.encode_rows(store, pool)
    self_in_pool = np.where(factual_rows["split"].to_numpy() == CLD_POOL,
                            pd.Index(pool["index"]).get_indexer(factual_rows["index"]), -1)
    features = {key: clip.encode_images(arrays[key]).numpy() for key in IMAGE_SETS}
    factual_features = clip.encode_images(factual).numpy()
    out = table[["row", "y", "y_cf", "guide", "sampling"]].assign(
        guidance_scale=table["guidance_scale"].to_numpy(), reconstruction_mse=table["reconstruction_mse"].to_numpy()
    )
    columns: dict[str, np.ndarray] = {}
    for key, prefix in IMAGE_SETS.items():
        images = arrays[key]
        columns |= {f"{prefix}{name}": v for name, v in oracle_verdicts(oracle, images, truth, y_cf).items()}
        if key != TRUE:
            columns[f"{prefix}mse_to_true"] = mse(images, arrays[TRUE])
            columns[f"{prefix}ssim_to_true"] = ssim(images, arrays[TRUE])
            columns[f"{prefix}clip_cosine_to_true"] = 1 - cosine_distance(features[key], features[TRUE])
        columns[f"{prefix}cld"] = cld(factual_features, features[key], y, y_cf, pool_features, pool["label"].to_numpy(),
                                      self_in_pool)
    columns["factual_mse_to_true"] = mse(factual, arrays[TRUE])
    columns["factual_ssim_to_true"] = ssim(factual, arrays[TRUE])
    columns["factual_clip_cosine_to_true"] = 1 - cosine_distance(factual_features, features[TRUE])
    return pd.concat([out, pd.DataFrame(columns)], axis=1)


def oracle_verdicts(oracle: "oracle_lib.OracleNet", images: np.ndarray, truth: pd.DataFrame, y_cf: np.ndarray) -> dict[str, np.ndarray]:
    """The oracle's reading of ``images`` (counterfactuals towards ``y_cf`` of factual images
    with factors ``truth``): its label, "no object", validity, each factor kept, and the two
    composites.  One definition for the audit and the generator curve (audit/generator_curve.py)."""
    pred = oracle_lib.predict(oracle, images)
    kept = oracle_lib.factor_agreement(pred, truth, images.shape[1])
    label = pred["label"].to_numpy()
    valid = label == y_cf
    return {
        "oracle_label": label,
        "no_object": label == oracle.n_classes,
        "valid": valid,
        **{f"kept_{factor}": kept[factor].to_numpy() for factor in FACTORS},
        "valid_bg_kept": valid & kept["background"].to_numpy(),
        "faithful": valid & kept[list(FACTORS)].all(axis=1).to_numpy(),
    }


def read_audits(paths: list[Path], datasets: list[str]) -> list[tuple[str, str, int, pd.DataFrame]]:
    """Per-image audit files, each with the dataset, variant and seed its path names."""
    return [(*layout.seed_key(layout.AUDIT, p, datasets), read_table(p)) for p in paths]


def read_oracle_reports(paths: list[Path], datasets: list[str]) -> dict[str, dict]:
    """The oracle's held-out scores per dataset, from the ``oracle`` rule's report files."""
    from dicap.io import read_json

    return {d: read_json(p)["test_unbiased"] for d, p in layout.by_dataset(layout.ORACLE_REPORT, paths, datasets).items()}


def summarise(audits: list[tuple[str, str, int, pd.DataFrame]], oracle_reports: dict[str, dict]) -> pd.DataFrame:
    """Mean over images per seed, then over seeds: one row per dataset and variant.

    ``audits`` holds ``(dataset, variant, seed, per-image audit)``; ``oracle_reports`` the
    oracle's held-out accuracy per dataset, shown beside the scores it limits.
    """
    per_seed = []
    for dataset, variant, seed, frame in audits:
        numeric = frame.drop(columns=["row", "y", "y_cf", "guide", "sampling", "guidance_scale"] + [c for c in frame if c.endswith("oracle_label")])
        row = {"dataset": dataset, "variant": variant, "guide": frame["guide"].iloc[0], "sampling": frame["sampling"].iloc[0],
               "guidance_scale": float(frame["guidance_scale"].iloc[0]), "seed": seed, "counterfactuals": len(frame)}
        per_seed.append(row | numeric.astype(float).mean().to_dict())
    seeds = pd.DataFrame(per_seed)
    keys = ["dataset", "variant", "guide", "sampling", "guidance_scale"]
    summary = seeds.groupby(keys, sort=False).agg(
        **{"seeds": ("seed", lambda s: " ".join(map(str, sorted(s)))), "counterfactuals": ("counterfactuals", "sum")},
        **{c: (c, "mean") for c in seeds.columns if c not in [*keys, "seed", "counterfactuals"]},
    ).reset_index()
    for dataset, report in oracle_reports.items():
        for name, value in report.items():
            summary.loc[summary["dataset"] == dataset, f"oracle_heldout_{name}"] = value
    return summary.round(4)
