"""Diff-SCM's Counterfactual Latent Divergence (CLD), per counterfactual (numpy only).

CLD scores minimality (Sanchez & Tsaftaris 2022, as the counterfactual benchmark of
Melistas et al. 2024 computes it): with ``d`` a distance in a latent space and
``div = d(x, x_cf)``, let ``S_cf`` be the distances from ``x`` to real images of the
counterfactual class and ``S_f`` those to real images of the factual class; then
``p1 = P(S_cf <= div)``, ``p2 = P(S_f >= div)`` and ``CLD = log(0.8 e^p1 + 0.2 e^p2)``, in
``[0, 1]``, lower is better: a good counterfactual is nearer its factual image than most
images of its new class are (small ``p1``), yet no nearer than most images of the old class
(small ``p2``).

**The latent space** is the frozen CLIP's L2-normalised image features, with the cosine
distance ``d = 1 - cos``.  Melistas et al. use an unconditional VAE's latents, which this
pipeline does not train; CLIP's features are the space the prompt learners see every
counterfactual in (training caches exactly these features), so the score says how minimal
a counterfactual is *for the method that uses it*.  The real images are a pool passed in
(the audit uses the store's ``train`` split, the pool the few-shot images are drawn from);
the factual image itself is left out of ``S_f``, where its distance of 0 would be no
comparison.
"""

from __future__ import annotations

import numpy as np

CLD_WEIGHTS = (0.8, 0.2)  # the weights of e^p1 and e^p2 (Diff-SCM)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise ``1 - cos`` of two (N, D) feature batches, shape (N,)."""
    a, b = _unit(a), _unit(b)
    if a.shape != b.shape:
        raise ValueError(f"feature batches differ in shape: {a.shape} vs {b.shape}")
    return 1.0 - (a * b).sum(axis=1)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected features of shape (N, D), got {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cld(
    factual: np.ndarray,
    counterfactual: np.ndarray,
    y: np.ndarray,
    y_cf: np.ndarray,
    pool: np.ndarray,
    pool_labels: np.ndarray,
    self_in_pool: np.ndarray | None = None,
) -> np.ndarray:
    """Per-row CLD of ``counterfactual[i]`` for ``factual[i]`` (features (N, D)), shape (N,).

    ``pool`` (P, D) and ``pool_labels`` (P,) are the real images; ``self_in_pool[i]`` is the
    pool row of factual image ``i`` (left out of its ``S_f``), or -1 when it is not in the pool.
    """
    y, y_cf, pool_labels = np.asarray(y), np.asarray(y_cf), np.asarray(pool_labels)
    if len(pool) != len(pool_labels):
        raise ValueError(f"{len(pool)} pool features but {len(pool_labels)} pool labels")
    missing = sorted(set(np.concatenate([y, y_cf]).tolist()) - set(pool_labels.tolist()))
    if missing:
        raise ValueError(f"the CLD pool holds no image of class {missing}: S_f or S_cf would be empty")
    div = cosine_distance(factual, counterfactual)
    to_pool = 1.0 - _unit(factual) @ _unit(pool).T  # (N, P)
    in_cf = pool_labels[None, :] == y_cf[:, None]
    in_f = pool_labels[None, :] == y[:, None]
    if self_in_pool is not None:
        rows = np.flatnonzero(np.asarray(self_in_pool) >= 0)
        in_f[rows, np.asarray(self_in_pool)[rows]] = False
    p1 = (in_cf & (to_pool <= div[:, None])).sum(axis=1) / in_cf.sum(axis=1)
    p2 = (in_f & (to_pool >= div[:, None])).sum(axis=1) / np.maximum(in_f.sum(axis=1), 1)
    w1, w2 = CLD_WEIGHTS
    return np.log(w1 * np.exp(p1) + w2 * np.exp(p2))
