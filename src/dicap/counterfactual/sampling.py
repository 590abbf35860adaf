"""Choosing the counterfactual class ``y_cf`` for each training image."""

from __future__ import annotations

import numpy as np

STRATEGIES = ("similarity", "random", "centroid")


def nearest_other(features: np.ndarray, classes: list[int]) -> dict[int, int]:
    """For each class, the other class whose (row of) ``features`` is most cosine-similar."""
    f = features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    return {c: classes[int(np.argmax(sim[i]))] for i, c in enumerate(classes)}


def class_centroids(image_features: np.ndarray, labels: np.ndarray, classes: list[int]) -> np.ndarray:
    """Mean L2-normalised image feature of each class's few-shot images, in ``classes`` order."""
    f = image_features / np.linalg.norm(image_features, axis=1, keepdims=True).clip(1e-12)
    missing = [c for c in classes if not np.any(labels == c)]
    if missing:
        raise ValueError(f"centroid sampling: classes {missing} have no few-shot images")
    return np.stack([f[labels == c].mean(axis=0) for c in classes])


def choose_targets(
    labels: np.ndarray,
    classes: list[int],
    strategy: str,
    seed: int,
    text_features: np.ndarray | None = None,
    image_features: np.ndarray | None = None,
) -> np.ndarray:
    """One ``y_cf`` != ``y`` per label, among ``classes`` (those that train: the base half, or
    every class for ``all_classes``, :func:`dicap.data.splits.trained_classes`).

    ``similarity`` picks the nearest other class by CLIP text embedding (the paper's
    best-performing choice: a hard, plausible alternative); ``centroid`` the nearest
    other class by the mean CLIP image feature of its few-shot images (what the images
    look like, not what their names say); ``random`` picks uniformly.
    """
    if len(classes) < 2:
        raise ValueError("counterfactuals need at least two training classes")
    if strategy == "similarity":
        if text_features is None:
            raise ValueError("similarity sampling needs class text features")
        nearest = nearest_other(text_features[classes], classes)
        return np.array([nearest[int(y)] for y in labels], dtype=np.int64)
    if strategy == "centroid":
        if image_features is None:
            raise ValueError("centroid sampling needs the few-shot images' features")
        nearest = nearest_other(class_centroids(image_features, labels, classes), classes)
        return np.array([nearest[int(y)] for y in labels], dtype=np.int64)
    if strategy == "random":
        rng = np.random.default_rng(seed)
        out = []
        for y in labels:
            others = [c for c in classes if c != y]
            out.append(others[int(rng.integers(len(others)))])
        return np.array(out, dtype=np.int64)
    raise ValueError(f"unknown sampling strategy {strategy!r}; expected one of {STRATEGIES}")
