"""Choosing the counterfactual class ``y_cf`` for each training image."""

from __future__ import annotations

import numpy as np

STRATEGIES = ("similarity", "random")


def choose_targets(labels: np.ndarray, classes: list[int], strategy: str, seed: int, text_features: np.ndarray | None = None) -> np.ndarray:
    """One ``y_cf`` != ``y`` per label, among ``classes`` (the base classes).

    ``similarity`` picks the nearest other class by CLIP text embedding (the paper's
    best-performing choice: a hard, plausible alternative); ``random`` picks uniformly.
    """
    if len(classes) < 2:
        raise ValueError("counterfactuals need at least two training classes")
    if strategy == "similarity":
        if text_features is None:
            raise ValueError("similarity sampling needs class text features")
        f = text_features[classes]
        sim = f @ f.T
        np.fill_diagonal(sim, -np.inf)
        nearest = {c: classes[int(np.argmax(sim[i]))] for i, c in enumerate(classes)}
        return np.array([nearest[int(y)] for y in labels], dtype=np.int64)
    if strategy == "random":
        rng = np.random.default_rng(seed)
        out = []
        for y in labels:
            others = [c for c in classes if c != y]
            out.append(others[int(rng.integers(len(others)))])
        return np.array(out, dtype=np.int64)
    raise ValueError(f"unknown sampling strategy {strategy!r}; expected one of {STRATEGIES}")
