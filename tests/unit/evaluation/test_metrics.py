"""Base-to-novel metrics (evaluation/metrics.py): harmonic mean, zero-shot and within-class
accuracy, base/novel, the worst class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicap.evaluation.metrics import accuracy_within, base_novel, harmonic_mean, worst_class_within, zero_shot_accuracy


def test_harmonic_mean():
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    assert harmonic_mean(1.0, 0.0) == 0.0
    assert harmonic_mean(0.8, 0.4) == pytest.approx(2 * 0.8 * 0.4 / 1.2)
    assert harmonic_mean(80.0, 40.0) == pytest.approx(160 / 3)
    assert harmonic_mean(0.8, 0.4) < (0.8 + 0.4) / 2


def test_zero_shot_accuracy_lets_every_class_compete():
    text = np.eye(3, dtype=np.float32)
    image = np.array([[0.9, 0.1, 0.0], [0.2, 0.1, 0.7], [0.6, 0.3, 0.1]], np.float32)
    assert zero_shot_accuracy(image, np.array([0, 2, 1]), text) == pytest.approx(2 / 3)


def _features():
    """4 classes (base 0, 1; novel 2, 3), text features = one-hot directions.

    Every image's overall argmax is a class of the *other* half, but within its own half
    the right class wins (or, for the last image, the wrong one).
    """
    text = torch.eye(4)
    image = torch.tensor([
        [0.5, 0.1, 0.9, 0.0],  # label 0: novel 2 beats all, base 0 wins among base
        [0.1, 0.4, 0.0, 0.8],  # label 1: novel 3 beats all, base 1 wins among base
        [0.9, 0.0, 0.3, 0.2],  # label 2: base 0 beats all, novel 2 wins among novel
        [0.0, 0.9, 0.5, 0.1],  # label 3: base 1 beats all, novel 2 wins among novel -> wrong
    ])
    labels = torch.tensor([0, 1, 2, 3])
    return image, labels, text


def test_accuracy_within_only_lets_given_classes_compete():
    image, labels, text = _features()
    assert (image @ text.T).argmax(1).tolist() == [2, 3, 0, 1]  # all wrong among all classes
    assert accuracy_within(image, labels, text, [0, 1]) == 1.0
    assert accuracy_within(image, labels, text, [2, 3]) == 0.5
    assert accuracy_within(image, labels, text, [0, 1, 2, 3]) == 0.0
    # images of other classes are ignored, not counted as errors
    assert accuracy_within(image, labels.numpy(), text, [1]) == 1.0


def test_accuracy_within_handles_unsorted_classes():
    image, labels, text = _features()
    assert accuracy_within(image, labels, text, [1, 0]) == 1.0
    assert accuracy_within(image, labels, text, [3, 2]) == 0.5


def test_accuracy_within_without_images_raises():
    image, labels, text = _features()
    with pytest.raises(ValueError):
        accuracy_within(image[:2], labels[:2], text, [2, 3])


def test_base_novel():
    image, labels, text = _features()
    out = base_novel(image @ text.T, labels, [0, 1], [2, 3])
    assert out["base"] == pytest.approx(100.0)
    assert out["novel"] == pytest.approx(50.0)
    assert out["hm"] == pytest.approx(100 * 2 * 1.0 * 0.5 / 1.5)


@pytest.mark.parametrize("seed", range(12))
def test_worst_class_is_the_minimum_per_class_accuracy(seed):
    gen = torch.Generator().manual_seed(seed)
    n_classes, per_class = 6, 20
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    text = torch.nn.functional.normalize(torch.randn(n_classes, 8, generator=gen), dim=-1)
    images = text[labels] + 0.9 * torch.randn(len(labels), 8, generator=gen)
    classes = [0, 1, 2]
    mask = torch.isin(labels, torch.tensor(classes))
    predicted = torch.tensor(classes)[(images[mask] @ text[classes].T).argmax(1)]
    per = [float((predicted[labels[mask] == c] == c).float().mean()) for c in classes]
    assert worst_class_within(images, labels, text, classes) == pytest.approx(min(per))
    scores = base_novel(images @ text.T, labels, classes, [3, 4, 5])
    assert scores["base_worst"] <= scores["base"] + 1e-9 and scores["novel_worst"] <= scores["novel"] + 1e-9
    assert scores["base"] == pytest.approx(100 * np.mean(per))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_linear_probe_reads_separable_classes_and_not_noise(seed):
    from dicap.evaluation.metrics import linear_probe_accuracy

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 16)) * 3
    y_train, y_test = rng.integers(4, size=200), rng.integers(4, size=200)
    f_train = centres[y_train] + rng.normal(size=(200, 16))
    f_test = centres[y_test] + rng.normal(size=(200, 16))
    assert linear_probe_accuracy(f_train, y_train, f_test, y_test) > 0.95
    noise = rng.normal(size=(200, 16))
    assert linear_probe_accuracy(noise, y_train, rng.normal(size=(200, 16)), y_test) < 0.45
