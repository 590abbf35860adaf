"""Per-image audit of generated counterfactuals against the truth the embedded SCM knows.

Each generated counterfactual is judged on three axes, never by the guide that made it:

* *validity* - the independent oracle classifies it as ``y_cf``;
* *preservation* - the oracle's factor estimates (background colour, object colour,
  position, scale) still match the factual image's true factors;
* *distance to the true counterfactual* ``f(y_cf, n, u)`` - per-pixel MSE and SSIM.

The same scores are computed for two references: the true counterfactual itself (what a
perfect generator would get: the oracle's own ceiling) and an unguided regeneration
(s = 0: what inversion alone does).  ``faithful`` is our composite, not the paper's "CLD"
(which is not defined anywhere we could find): the share of counterfactuals that are
valid *and* keep all four factors, i.e. exactly right on every axis we can measure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dicap import layout
from dicap.audit import oracle as oracle_lib
from dicap.audit.similarity import mse, ssim
from dicap.counterfactual.shards import GENERATED, TRUE, UNGUIDED
from dicap.data.store import DatasetStore

FACTORS = ("background", "object_colour", "position", "scale")
TRUTH_COLUMNS = ["bg", "fg", "cx", "cy", "scale"]
# image set -> column prefix; the generated counterfactuals carry no prefix.
IMAGE_SETS = {GENERATED: "", TRUE: "true_", UNGUIDED: "unguided_"}


def audit_counterfactuals(
    store: DatasetStore, split: pd.DataFrame, arrays: dict[str, np.ndarray], table: pd.DataFrame, oracle: "oracle_lib.OracleNet"
) -> pd.DataFrame:
    """One row per counterfactual: validity, preservation and distances, plus references."""
    missing = [key for key in IMAGE_SETS if key not in arrays]
    if missing:
        raise KeyError(f"counterfactuals lack {missing}: only datasets with known factors (the embedded suite) can be audited")
    factual_rows = split.iloc[table["row"].to_numpy()].reset_index(drop=True)
    truth = factual_rows[TRUTH_COLUMNS]
    factual = store.pixels(factual_rows)
    size = factual.shape[1]
    y_cf = table["y_cf"].to_numpy()
    out = table[["row", "y", "y_cf", "guide", "sampling"]].assign(
        guidance_scale=table["guidance_scale"].to_numpy(), reconstruction_mse=table["reconstruction_mse"].to_numpy()
    )
    columns: dict[str, np.ndarray] = {}
    for key, prefix in IMAGE_SETS.items():
        images = arrays[key]
        pred = oracle_lib.predict(oracle, images)
        kept = oracle_lib.factor_agreement(pred, truth, size)
        valid = pred["label"].to_numpy() == y_cf
        columns[f"{prefix}oracle_label"] = pred["label"].to_numpy()
        columns[f"{prefix}valid"] = valid
        for factor in FACTORS:
            columns[f"{prefix}kept_{factor}"] = kept[factor].to_numpy()
        columns[f"{prefix}faithful"] = valid & kept[list(FACTORS)].all(axis=1).to_numpy()
        if key != TRUE:
            columns[f"{prefix}mse_to_true"] = mse(images, arrays[TRUE])
            columns[f"{prefix}ssim_to_true"] = ssim(images, arrays[TRUE])
    columns["factual_mse_to_true"] = mse(factual, arrays[TRUE])
    columns["factual_ssim_to_true"] = ssim(factual, arrays[TRUE])
    return pd.concat([out, pd.DataFrame(columns)], axis=1)


def read_audits(paths: list[Path], datasets: list[str]) -> list[tuple[str, str, int, pd.DataFrame]]:
    """Per-image audit files, each with the dataset, variant and seed its path names."""
    return [(*layout.seed_key(layout.AUDIT, p, datasets), pd.read_parquet(p)) for p in paths]


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
