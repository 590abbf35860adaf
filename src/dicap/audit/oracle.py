"""An oracle that reads class and non-causal factors back from an image.

A counterfactual must change the class and keep everything else.  Asking the generator's
own guide whether the class changed is circular (the sampler optimised exactly that
score, so it can be fooled by adversarial pixels), so the audit uses a separately trained
CNN that never saw a diffused image.  Besides the class it predicts the background and
object colours and the geometry (centre and scale), so "everything else was kept" can be
checked factor by factor, also on real data where no true counterfactual exists.

The class head has one more answer than the dataset has classes: **no object** (index
``n_classes``).  A generator that fails can return a blank background, noise or a texture;
without that answer the oracle must still name a class, and would sometimes name ``y_cf``.
It learns the answer from objectless images rendered here, deterministically
(:func:`objectless_images`): blank backgrounds in the SCM's background colours with pixel
noise, pure noise, and diagonal and horizontal stripes.  A counterfactual is valid only
when the oracle reads ``y_cf``, which an image it reads as no object never is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from dicap.backbones.diffusion import pixels_to_model
from dicap.data import scm
from dicap.io import load_state_dict, read_json, save_state_dict, write_json
from dicap.runtime import device, optimizer_step

ORACLE_WEIGHTS = "oracle.safetensors"
ORACLE_INFO = "oracle.json"
GEOMETRY = ("cx", "cy", "scale")
NO_OBJECT = "no object"  # what the oracle's extra class (index n_classes) is called
OBJECTLESS_KINDS = ("blank", "noise", "diagonal_stripes", "horizontal_stripes")
PREDICTION_COLUMNS = ["label", "label_confidence", "bg", "fg", "cx", "cy", "scale"]

# A factor counts as kept when the oracle's estimates differ by at most one pixel.
# Sub-pixel estimates on 16 px images are noisy (the oracle itself is only about that
# precise), and one pixel is the smallest change a person can see, so a tighter tolerance
# would flag the oracle's own error and a looser one would pass visible edits.
POSITION_TOLERANCE_PX = 1.0  # Euclidean error of the object's centre
SCALE_TOLERANCE_PX = 1.0  # error of the object's extent (scale * size pixels)
_EPS = 1e-9  # so that an error of exactly one pixel is not lost to rounding
IGNORE = -100  # the factor target of an objectless image: nothing to learn (cross_entropy's ignore_index)
HELD_OUT_OBJECTLESS_SEED = 2**32 + 1  # never an oracle.train.seed (those are < 2^32), so never a training image


def _geometry_scale() -> tuple[np.ndarray, np.ndarray]:
    """Centre and half-width of each geometry factor's range, to map it to [-1, 1]."""
    lo, hi = scm.SCALE_RANGE
    centre = np.array([0.0, 0.0, (lo + hi) / 2], dtype=np.float32)
    half = np.array([scm.POSITION_RANGE, scm.POSITION_RANGE, (hi - lo) / 2], dtype=np.float32)
    return centre, half


def objectless_images(n: int, size: int, seed: int) -> np.ndarray:
    """``n`` uint8 images (n, size, size, 3) with no object, the kinds of
    :data:`OBJECTLESS_KINDS` in turn; the same for the same ``seed``.

    Blank images take a background colour of the SCM with pixel noise of one to five times
    the SCM's own; stripes take two of the SCM's colours (backgrounds and objects), a period
    of 2 to 4 pixels and a random phase, with the SCM's pixel noise.
    """
    rng = np.random.default_rng([seed, 7])  # a stream of its own, never the renders'
    colours = np.array([*scm.BACKGROUNDS.values(), *scm.OBJECTS.values()], np.float32)
    backgrounds = np.array(list(scm.BACKGROUNDS.values()), np.float32)
    i, j = np.mgrid[0:size, 0:size]
    out = np.empty((n, size, size, 3), np.uint8)
    for k in range(n):
        kind = OBJECTLESS_KINDS[k % len(OBJECTLESS_KINDS)]
        noise_std = scm.PIXEL_NOISE_STD
        if kind == "blank":
            img = np.broadcast_to(backgrounds[rng.integers(len(backgrounds))], (size, size, 3))
            noise_std *= rng.uniform(1, 5)
        elif kind == "noise":
            img, noise_std = rng.uniform(0, 255, (size, size, 3)), 0.0
        else:
            a, b = colours[rng.choice(len(colours), 2, replace=False)]
            coordinate = i + j if kind == "diagonal_stripes" else i
            period = int(rng.integers(2, 5))
            phase = (coordinate + int(rng.integers(period))) % period < period / 2
            img = np.where(phase[..., None], a, b)
        img = img + rng.normal(0, noise_std, (size, size, 3)) if noise_std else img
        out[k] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def label_name(classes: list[str], label: int) -> str:
    """A class name for an oracle label, :data:`NO_OBJECT` for the extra one."""
    return NO_OBJECT if label == len(classes) else classes[label]


class OracleNet(nn.Module):
    """A small CNN with one head per audited quantity.

    The features are flattened rather than pooled, so the heads keep *where* the object
    is, which the position regression needs.  The class head has ``n_classes + 1`` outputs:
    the last is "no object".
    """

    def __init__(self, n_classes: int, image_size: int = 16, width: int = 32):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"oracle image_size must be divisible by 4 (two stride-2 convs), got {image_size}")
        self.n_classes, self.image_size, self.width = n_classes, image_size, width
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width * 2, 3, padding=1, stride=2), nn.SiLU(),
            nn.Conv2d(width * 2, width * 2, 3, padding=1, stride=2), nn.SiLU(),
            nn.Flatten(),
            nn.Linear(width * 2 * (image_size // 4) ** 2, width * 4), nn.SiLU(),
        )
        self.heads = nn.ModuleDict({
            "class": nn.Linear(width * 4, n_classes + 1),  # + no object
            "bg": nn.Linear(width * 4, len(scm.BACKGROUNDS)),
            "fg": nn.Linear(width * 4, len(scm.OBJECTS)),
            "geometry": nn.Linear(width * 4, len(GEOMETRY)),  # normalised cx, cy, scale
        })

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        return {name: head(h) for name, head in self.heads.items()}


def _geometry_targets(table: pd.DataFrame) -> torch.Tensor:
    centre, half = _geometry_scale()
    values = table[list(GEOMETRY)].to_numpy(np.float32)
    return torch.tensor((values - centre) / half)


def train_oracle(
    images: np.ndarray,
    table: pd.DataFrame,
    n_classes: int,
    params: dict[str, Any],
    out_dir: str | Path,
    seed: int,
) -> list[float]:
    """Fit the oracle on clean rendered images and their factors; deterministic given ``seed``.

    Gaussian pixel noise (``noise_std``, in [-1, 1] units) is added to every batch so the
    oracle tolerates the small artefacts a diffusion model leaves, instead of reading them
    as a changed factor.  One class's share of objectless images (:func:`objectless_images`)
    joins the images as class ``n_classes``; they have no colours or geometry to learn, so
    those heads learn from the rendered objects alone.
    """
    if len(images) != len(table):
        raise ValueError(f"{len(images)} images but {len(table)} table rows")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    dev = device()
    empty = objectless_images(max(1, len(images) // n_classes), int(images.shape[1]), seed)
    x_all = pixels_to_model(np.concatenate([images, empty]))
    nothing = np.full(len(empty), IGNORE, np.int64)
    targets = {
        "class": torch.tensor(np.concatenate([table["label"].to_numpy(np.int64), np.full(len(empty), n_classes)])),
        "bg": torch.tensor(np.concatenate([table["bg"].to_numpy(np.int64), nothing])),
        "fg": torch.tensor(np.concatenate([table["fg"].to_numpy(np.int64), nothing])),
        "geometry": torch.cat([_geometry_targets(table), torch.zeros(len(empty), len(GEOMETRY))]),
    }
    has_object = torch.cat([torch.ones(len(images), dtype=torch.bool), torch.zeros(len(empty), dtype=torch.bool)])
    width, image_size = int(params.get("width", 32)), int(images.shape[1])
    noise_std = float(params.get("noise_std", 0.0))
    model = OracleNet(n_classes, image_size, width).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=params["lr"])
    # Cosine decay lets the geometry regression settle to sub-pixel precision at the end.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, params["steps"]))
    losses = []
    for _ in tqdm(range(params["steps"]), desc="oracle", mininterval=5):
        idx = torch.randint(len(x_all), (params["batch_size"],), generator=gen)
        x = x_all[idx]
        if noise_std > 0:
            x = x + noise_std * torch.randn(x.shape, generator=gen)
        out = model(x.to(dev))
        objects = has_object[idx].to(dev)
        n_objects = max(1, int(objects.sum()))  # a batch of objectless images only adds no factor loss
        loss = (
            F.cross_entropy(out["class"], targets["class"][idx].to(dev))
            + F.cross_entropy(out["bg"], targets["bg"][idx].to(dev), ignore_index=IGNORE, reduction="sum") / n_objects
            + F.cross_entropy(out["fg"], targets["fg"][idx].to(dev), ignore_index=IGNORE, reduction="sum") / n_objects
            + F.mse_loss(out["geometry"][objects], targets["geometry"][idx].to(dev)[objects], reduction="sum")
            / (n_objects * len(GEOMETRY))
        )
        losses.append(optimizer_step(opt, loss, schedule))
    out_path = Path(out_dir)
    save_state_dict(out_path / ORACLE_WEIGHTS, model)
    write_json(out_path / ORACLE_INFO, {
        "n_classes": n_classes, "width": width, "image_size": image_size,
        "noise_std": noise_std, "steps": params["steps"], "seed": seed,
    })
    return losses


def load_oracle(path: str | Path) -> OracleNet:
    """Load a trained oracle from its directory, frozen and in eval mode."""
    path = Path(path)
    for name in (ORACLE_WEIGHTS, ORACLE_INFO):
        if not (path / name).exists():
            raise FileNotFoundError(f"oracle {path / name} does not exist; rerun the oracle training rule")
    info = read_json(path / ORACLE_INFO)
    model = OracleNet(info["n_classes"], info["image_size"], info["width"])
    load_state_dict(path / ORACLE_WEIGHTS, model)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def predict(oracle: OracleNet, images: np.ndarray, batch_size: int = 512) -> pd.DataFrame:
    """The oracle's reading of uint8 images (N, H, W, 3), one row per image, in scm units."""
    if len(images) == 0:
        return pd.DataFrame({
            "label": pd.Series(dtype=np.int64), "label_confidence": pd.Series(dtype=np.float64),
            "bg": pd.Series(dtype=np.int64), "fg": pd.Series(dtype=np.int64),
            "cx": pd.Series(dtype=np.float64), "cy": pd.Series(dtype=np.float64),
            "scale": pd.Series(dtype=np.float64),
        })[PREDICTION_COLUMNS]
    if images.shape[1:] != (oracle.image_size, oracle.image_size, 3):
        raise ValueError(f"oracle expects ({oracle.image_size}, {oracle.image_size}, 3) images, got {images.shape[1:]}")
    was_training = oracle.training
    oracle.eval()
    dev = next(oracle.parameters()).device
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("probs", "bg", "fg", "geometry")}
    for start in range(0, len(images), batch_size):
        out = oracle(pixels_to_model(images[start:start + batch_size]).to(dev))
        parts["probs"].append(torch.softmax(out["class"], dim=1).cpu().numpy())
        parts["bg"].append(out["bg"].argmax(dim=1).cpu().numpy())
        parts["fg"].append(out["fg"].argmax(dim=1).cpu().numpy())
        parts["geometry"].append(out["geometry"].cpu().numpy())
    oracle.train(was_training)
    probs = np.concatenate(parts["probs"])
    centre, half = _geometry_scale()
    geometry = np.concatenate(parts["geometry"]).astype(np.float64) * half + centre
    return pd.DataFrame({
        "label": probs.argmax(axis=1).astype(np.int64),
        "label_confidence": probs.max(axis=1).astype(np.float64),
        "bg": np.concatenate(parts["bg"]).astype(np.int64),
        "fg": np.concatenate(parts["fg"]).astype(np.int64),
        "cx": geometry[:, 0], "cy": geometry[:, 1], "scale": geometry[:, 2],
    })


def factor_agreement(pred: pd.DataFrame, truth: pd.DataFrame, size: int) -> pd.DataFrame:
    """Which non-causal factors ``pred`` keeps relative to ``truth``, row by row.

    ``truth`` can be a factor table or another oracle reading (e.g. of the factual image).
    Geometry errors are converted to pixels of a ``size``-pixel canvas: the centre moves by
    ``cx * size`` pixels and the object spans ``scale * size`` pixels.
    """
    if len(pred) != len(truth):
        raise ValueError(f"{len(pred)} predictions but {len(truth)} reference rows")
    p, t = pred.reset_index(drop=True), truth.reset_index(drop=True)
    def delta(col: str) -> np.ndarray:
        return p[col].to_numpy(float) - t[col].to_numpy(float)

    centre_px = np.hypot(delta("cx"), delta("cy")) * size
    extent_px = np.abs(delta("scale")) * size
    return pd.DataFrame({
        "background": p["bg"].to_numpy() == t["bg"].to_numpy(),
        "object_colour": p["fg"].to_numpy() == t["fg"].to_numpy(),
        "position": centre_px <= POSITION_TOLERANCE_PX + _EPS,
        "scale": extent_px <= SCALE_TOLERANCE_PX + _EPS,
    })


def held_out_report(oracle: OracleNet, images: np.ndarray, table: pd.DataFrame, size: int) -> dict[str, float]:
    """The oracle's own accuracy on a labelled split, to print beside the audit it performs.

    ``class_accuracy`` is on the split's real renders (reading one as no object is an
    error); ``no_object_recall`` is the share of as many held-out objectless images per
    class (a seed training never uses) that it reads as no object.
    """
    pred = predict(oracle, images)
    agree = factor_agreement(pred, table, size)
    labels = table["label"].to_numpy()
    empty = objectless_images(max(1, len(table) // oracle.n_classes), size, HELD_OUT_OBJECTLESS_SEED)
    return {
        "n": int(len(table)),
        "class_accuracy": float((pred["label"].to_numpy() == labels).mean()) if len(table) else float("nan"),
        **{col: float(agree[col].mean()) if len(table) else float("nan") for col in agree.columns},
        "no_object_recall": float((predict(oracle, empty)["label"].to_numpy() == oracle.n_classes).mean()),
    }
