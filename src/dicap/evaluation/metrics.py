"""Base-to-novel accuracy: each half of the classes is scored among its own classes only."""

from __future__ import annotations

import numpy as np
import torch


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2BN / (B + N), 0 when both are 0."""
    return 0.0 if base + novel == 0 else 2 * base * novel / (base + novel)


def _predictions(scores: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted, true) labels of the images of ``classes`` when only those classes compete.

    ``scores`` is (N, n_classes): each image's similarity to every class's prompt.
    """
    labels = torch.as_tensor(labels)
    mask = torch.isin(labels, torch.tensor(classes))
    if not mask.any():
        raise ValueError(f"no test images of classes {classes}")
    return torch.tensor(classes)[scores[mask][:, classes].argmax(1)], labels[mask]


def accuracy_within(image_f: torch.Tensor, labels: torch.Tensor, text_f: torch.Tensor, classes: list[int]) -> float:
    """Accuracy on images of ``classes`` when only those classes compete."""
    predicted, truth = _predictions(image_f @ text_f.T, labels, classes)
    return float((predicted == truth).float().mean())


def worst_class_within(image_f: torch.Tensor, labels: torch.Tensor, text_f: torch.Tensor, classes: list[int]) -> float:
    """The lowest per-class accuracy among ``classes``, competing among themselves.

    On the aligned and conflict splits every image of a class stands in the same relation to
    its background, so a class there is one group: the minimum over both splits is the
    worst-group accuracy of the shortcut literature.
    """
    return _worst_class(*_predictions(image_f @ text_f.T, labels, classes), classes)


def _worst_class(predicted: torch.Tensor, truth: torch.Tensor, classes: list[int]) -> float:
    return min(float((predicted[truth == c] == c).float().mean()) for c in classes if (truth == c).any())


def base_novel(similarities: torch.Tensor, labels: torch.Tensor, base: list[int], novel: list[int]) -> dict[str, float]:
    """Base, novel and HM accuracy (%), and each half's worst class: one prediction per half.

    ``similarities`` is (N, n_classes), from any learner (:meth:`PromptLearner.similarities`).
    """
    scores = {}
    for half, classes in (("base", base), ("novel", novel)):
        predicted, truth = _predictions(similarities, labels, classes)
        scores[half] = float((predicted == truth).float().mean())
        scores[f"{half}_worst"] = _worst_class(predicted, truth, classes)
    return {"base": 100 * scores["base"], "novel": 100 * scores["novel"],
            "hm": 100 * harmonic_mean(scores["base"], scores["novel"]),
            "base_worst": 100 * scores["base_worst"], "novel_worst": 100 * scores["novel_worst"]}


def linear_probe_accuracy(train_f: np.ndarray, train_y: np.ndarray, test_f: np.ndarray, test_y: np.ndarray,
                          seed: int = 0) -> float:
    """Accuracy of a logistic-regression probe on frozen image features (CLIP's linear probe).

    It says whether the features carry the class at all, whatever the text tower makes of
    it: the calibration's check that the frozen image encoder is not what limits prompt
    learning (real CLIP's probes read these datasets' classes).
    """
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(C=10.0, max_iter=2000, random_state=seed)
    probe.fit(np.asarray(train_f, np.float64), np.asarray(train_y))
    return float((probe.predict(np.asarray(test_f, np.float64)) == np.asarray(test_y)).mean())


def zero_shot_accuracy(image_f: np.ndarray, labels: np.ndarray, text_f: np.ndarray) -> float:
    """Accuracy when every class competes (the backbone report's zero-shot number).

    numpy, on L2-normalised float32 features, as the CLIP backbone job has always computed
    it: the recorded reference accuracy depends on these exact float kernels.
    """
    return float(((image_f @ text_f.T).argmax(1) == labels).mean())
