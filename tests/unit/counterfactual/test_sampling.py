"""Choosing y_cf: every strategy returns another base class, each as documented."""

from __future__ import annotations

import numpy as np
import pytest

from dicap.counterfactual.sampling import STRATEGIES, choose_targets

CLASSES = [0, 1, 2, 3]
LABELS = np.repeat(CLASSES, 3)


def _features(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_picks_another_base_class(strategy):
    text = np.random.default_rng(0).normal(size=(6, 5))
    images = np.random.default_rng(1).normal(size=(len(LABELS), 5))
    targets = choose_targets(LABELS, CLASSES, strategy, seed=3, text_features=text, image_features=images)
    assert targets.shape == LABELS.shape
    assert np.all(targets != LABELS)
    assert set(targets) <= set(CLASSES)


def test_similarity_uses_text_neighbours():
    # classes 0 and 2 have near-identical names; 1 and 3 too
    text = _features([[1, 0, 0], [0, 1, 0], [0.9, 0.1, 0], [0.1, 0.9, 0]])
    targets = choose_targets(np.array(CLASSES), CLASSES, "similarity", seed=0, text_features=text)
    assert targets.tolist() == [2, 3, 0, 1]


def test_centroid_uses_mean_image_features_not_names():
    text = _features([[1, 0, 0], [0, 1, 0], [0.9, 0.1, 0], [0.1, 0.9, 0]])
    # images of class 0 look like class 1's, and class 2's like class 3's
    centres = {0: [1, 0, 0], 1: [0.95, 0.05, 0], 2: [0, 0, 1], 3: [0, 0.05, 0.95]}
    rng = np.random.default_rng(0)
    images = np.stack([np.asarray(centres[int(y)]) + rng.normal(0, 0.01, 3) for y in LABELS])
    targets = choose_targets(LABELS, CLASSES, "centroid", seed=0, text_features=text, image_features=images)
    expected = {0: 1, 1: 0, 2: 3, 3: 2}
    assert targets.tolist() == [expected[int(y)] for y in LABELS]


def test_random_is_seeded_and_spreads_over_classes():
    many = np.repeat(CLASSES, 30)
    a = choose_targets(many, CLASSES, "random", seed=5)
    assert np.array_equal(a, choose_targets(many, CLASSES, "random", seed=5))
    assert not np.array_equal(a, choose_targets(many, CLASSES, "random", seed=6))
    for y in CLASSES:  # 30 draws among 3 others: each appears
        assert set(a[many == y]) == set(CLASSES) - {y}


def test_centroid_refuses_a_class_without_images():
    with pytest.raises(ValueError, match=r"classes \[3\] have no few-shot images"):
        choose_targets(np.array([0, 1, 2]), CLASSES, "centroid", seed=0, image_features=np.eye(3))


@pytest.mark.parametrize(("strategy", "missing"), [("similarity", "text features"), ("centroid", "features")])
def test_strategies_name_what_they_need(strategy, missing):
    with pytest.raises(ValueError, match=missing):
        choose_targets(LABELS, CLASSES, strategy, seed=0)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_every_class_a_target_may_be_any_class(strategy, seed):
    """all_classes: shots of all 6 classes, y_cf among all 6; the base half (0-2) alone never reaches 3-5."""
    every, base = list(range(6)), [0, 1, 2]
    text = np.random.default_rng(seed).normal(size=(6, 5))
    text[3:] = text[:3] + 0.01  # each novel class is its base twin's nearest neighbour (and the other way round)
    labels = np.repeat(every, 4)
    images = text[labels] + 0.001 * np.random.default_rng(seed).normal(size=(len(labels), 5))
    targets = choose_targets(labels, every, strategy, seed, text_features=text, image_features=images)
    assert np.all(targets != labels) and set(targets) <= set(every)
    assert set(targets[labels < 3]) & {3, 4, 5}  # a base image may go to a novel class
    on_base = labels < 3
    assert set(choose_targets(labels[on_base], base, strategy, seed, text_features=text, image_features=images[on_base])) <= set(base)
