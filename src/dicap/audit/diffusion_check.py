"""Does the diffusion model know its classes?  The oracle reads samples drawn from noise.

A counterfactual can only become ``y_cf`` if the model can draw ``y_cf`` at all.  A model
trained too briefly draws blobs, or one class for another, and every counterfactual made with
it fails in ways the audit then blames on the method.  So, before any counterfactual, the
``diffusion_check`` rule draws ``samples_per_class`` images of every class from seeded
Gaussian noise (DDIM over the whole schedule with ``counterfactual.steps`` steps, classifier-free
at s = 1 - the conditional model alone - and at the config's guidance scale) and the
independent oracle judges them.  A class's *read* is the share of its samples the oracle
reads as that class (a "no object" reading counts against it).  The check passes when every
class's read at s = 1 reaches ``diffusion.check.min_class_read``: guidance can sharpen a class
the model knows, but the conditional score is what the model knows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dicap.audit import oracle as oracle_lib
from dicap.backbones.diffusion import DiffusionBundle
from dicap.backbones.guides import ClassifierFreeGuide
from dicap.counterfactual import ddim
from dicap.runtime import device

CHECKED_SCALE = 1.0  # always read too: the conditional model alone, no guidance (the threshold applies at the config's scale)


def class_reads(
    diffusion: DiffusionBundle,
    oracle: "oracle_lib.OracleNet",
    size: int,
    steps: int,
    scales: list[float],
    samples_per_class: int,
    seed: int,
    batch_size: int = 64,
) -> dict[float, np.ndarray]:
    """Scale -> per-class read (n_classes,): the share of each class's samples the oracle reads as it.

    Every scale starts from the same noise (one draw from ``seed`` for all samples, so the
    batch size changes nothing but float rounding).
    """
    n = diffusion.n_classes
    if oracle.n_classes != n:
        raise ValueError(f"the oracle reads {oracle.n_classes} classes but the diffusion model draws {n}")
    dev = device()
    diffusion.to(dev)
    guide = ClassifierFreeGuide(diffusion)
    labels = torch.arange(n).repeat_interleave(samples_per_class)
    noise = torch.randn((len(labels), 3, size, size), generator=torch.Generator().manual_seed(seed))
    reads = {}
    for scale in scales:
        images = np.concatenate([
            diffusion.to_pixels(ddim.sample(diffusion, guide, noise[i : i + batch_size].to(dev), labels[i : i + batch_size].to(dev),
                                            steps, scale))
            for i in range(0, len(labels), batch_size)
        ])
        seen = oracle_lib.predict(oracle, images)["label"].to_numpy() == labels.numpy()
        reads[float(scale)] = seen.reshape(n, samples_per_class).mean(axis=1)
    return reads


def check_report(
    reads: dict[float, np.ndarray], classes: list[str], min_class_read: float, model: str, guidance_scale: float
) -> dict[str, Any]:
    """The check's verdict, with the one-line refusal the counterfactual jobs raise when it fails.

    ``reads`` holds :data:`CHECKED_SCALE` and ``guidance_scale`` (which may be the same);
    ``reads`` in the report maps each scale, written ``f"{scale:g}"``, to class name -> read.
    """
    checked = reads[float(guidance_scale)]  # the scale the counterfactuals are drawn at
    weakest = int(np.argmin(checked))
    passed = bool(checked[weakest] >= min_class_read)
    refusal = None if passed else (
        f"diffusion model {model} reads class {classes[weakest]} at {checked[weakest]:.2f} < diffusion.check.min_class_read "
        f"{min_class_read:g}: train it longer (diffusion.train.steps) or lower the threshold")
    return {
        "passed": passed, "refusal": refusal, "min_class_read": min_class_read, "checked_scale": float(guidance_scale),
        "guidance_scale": float(guidance_scale),
        "reads": {f"{scale:g}": {c: round(float(r), 4) for c, r in zip(classes, read)} for scale, read in reads.items()},
    }
