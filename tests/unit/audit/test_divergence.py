"""Diff-SCM's Counterfactual Latent Divergence (audit/divergence.py): the cosine distance, CLD's
two probabilities worked by hand, its bounds at the extremes, the factual image left out of its
own class, and a pool without a class refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dicap.audit.divergence import cld, cosine_distance


def _angle(degrees) -> np.ndarray:
    r = np.radians(np.atleast_1d(np.asarray(degrees, float)))
    return np.stack([np.cos(r), np.sin(r)], axis=1)


def _cld(p1: float, p2: float) -> float:
    return math.log(0.8 * math.exp(p1) + 0.2 * math.exp(p2))


@pytest.mark.parametrize("scale", [1.0, 0.5, 7.0])
def test_cosine_distance_is_one_minus_cosine_whatever_the_norm(scale):
    a = _angle([0, 0, 0, 30])
    b = scale * _angle([0, 90, 180, 90])
    np.testing.assert_allclose(cosine_distance(a, b), [0, 1, 2, 1 - math.cos(math.radians(60))], atol=1e-12)
    with pytest.raises(ValueError, match="differ in shape"):
        cosine_distance(a, b[:2])


# A pool on the unit circle: class 0 at 10, 20, 30, 40 degrees from the factual image at 0,
# class 1 at 50, 60, 70, 80 degrees.
POOL, POOL_LABELS = _angle([10, 20, 30, 40, 50, 60, 70, 80]), np.array([0, 0, 0, 0, 1, 1, 1, 1])


@pytest.mark.parametrize("degrees, p1, p2", [
    (0, 0.0, 1.0),     # no change: nearer than every image of either class
    (35, 0.0, 0.25),   # between the classes: nearer than every y_cf image, farther than 3 of 4 y images
    (65, 0.5, 0.0),    # inside y_cf: 50 and 60 are nearer
    (180, 1.0, 0.0),   # as far as can be
])
def test_cld_by_hand(degrees, p1, p2):
    got = cld(_angle(0), _angle(degrees), [0], [1], POOL, POOL_LABELS)
    assert got == pytest.approx([_cld(p1, p2)])


def test_cld_is_bounded_and_rows_are_independent():
    angles = np.arange(0, 181, 15)
    got = cld(_angle(np.zeros(len(angles))), _angle(angles), np.zeros(len(angles), int), np.ones(len(angles), int), POOL,
              POOL_LABELS)
    assert (got >= 0).all() and (got <= 1).all()
    assert got[0] == pytest.approx(_cld(0, 1)) and got[-1] == pytest.approx(_cld(1, 0))
    one = [cld(_angle(0), _angle(a), [0], [1], POOL, POOL_LABELS)[0] for a in angles]
    np.testing.assert_allclose(got, one)


def test_the_factual_image_is_left_out_of_its_own_class():
    pool = np.concatenate([_angle(0), POOL])  # the factual image itself is pool row 0
    labels = np.concatenate([[0], POOL_LABELS])
    kept = cld(_angle(0), _angle(35), [0], [1], pool, labels)
    left_out = cld(_angle(0), _angle(35), [0], [1], pool, labels, self_in_pool=np.array([0]))
    assert kept == pytest.approx([_cld(0, 1 / 5)])  # distance 0 counts as a class-0 image nearer than 35 degrees
    assert left_out == pytest.approx([_cld(0, 1 / 4)])
    assert cld(_angle(0), _angle(35), [0], [1], pool, labels, self_in_pool=np.array([-1])) == pytest.approx(kept)


def test_a_pool_without_a_class_is_refused():
    with pytest.raises(ValueError, match=r"no image of class \[2\]"):
        cld(_angle(0), _angle(35), [0], [2], POOL, POOL_LABELS)
    with pytest.raises(ValueError, match="pool labels"):
        cld(_angle(0), _angle(35), [0], [1], POOL, POOL_LABELS[:3])
