"""Base-to-novel accuracy: each half of the classes is scored among its own classes only."""

from __future__ import annotations

import numpy as np
import torch


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2BN / (B + N), 0 when both are 0."""
    return 0.0 if base + novel == 0 else 2 * base * novel / (base + novel)


def accuracy_within(image_f: torch.Tensor, labels: torch.Tensor, text_f: torch.Tensor, classes: list[int]) -> float:
    """Accuracy on images of ``classes`` when only those classes compete."""
    labels = torch.as_tensor(labels)
    mask = torch.isin(labels, torch.tensor(classes))
    if not mask.any():
        raise ValueError(f"no test images of classes {classes}")
    logits = image_f[mask] @ text_f[classes].T
    predicted = torch.tensor(classes)[logits.argmax(1)]
    return float((predicted == labels[mask]).float().mean())


def base_novel(image_f: torch.Tensor, labels: torch.Tensor, text_f: torch.Tensor, base: list[int], novel: list[int]) -> dict[str, float]:
    b = accuracy_within(image_f, labels, text_f, base)
    n = accuracy_within(image_f, labels, text_f, novel)
    return {"base": 100 * b, "novel": 100 * n, "hm": 100 * harmonic_mean(b, n)}


def zero_shot_accuracy(image_f: np.ndarray, labels: np.ndarray, text_f: np.ndarray) -> float:
    """Accuracy when every class competes (the backbone report's zero-shot number).

    numpy, on L2-normalised float32 features, as the CLIP backbone job has always computed
    it: the recorded reference accuracy depends on these exact float kernels.
    """
    return float(((image_f @ text_f.T).argmax(1) == labels).mean())
