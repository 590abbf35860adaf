"""Per-image similarity of a generated counterfactual to its reference (numpy only).

Pixel MSE says how far the pixels moved; SSIM (Wang et al. 2004) says whether local
structure (luminance, contrast, correlation) survived, which MSE alone cannot separate
from a uniform colour shift.  Both are vectorised over the batch so an audit of thousands
of 16 px images costs milliseconds, and neither needs torch or scipy, so they run in light
jobs.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# An 11-px window (the paper's default) leaves a 6x6 'valid' map on a 16 px image and
# weights the border pixels it never reaches at zero; 7 px keeps a 10x10 map while still
# spanning about two sigma either side of the centre.
SSIM_WINDOW = 7
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"image batches differ in shape: {a.shape} vs {b.shape}")
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected image batches of shape (N, H, W, 3), got {a.shape}")
    return a, b


def mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image mean squared error, shape (N,), on uint8 images mapped to [-1, 1].

    The units are the diffusion model's, so the numbers compare directly with the
    pipeline's ``reconstruction_mse``.
    """
    a, b = _check_pair(a, b)
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise TypeError(f"mse expects uint8 images (the pipeline's pixels), got {a.dtype} and {b.dtype}")
    diff = (a.astype(np.float64) - b.astype(np.float64)) / 127.5  # the offset of x/127.5 - 1 cancels
    return (diff**2).mean(axis=(1, 2, 3))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian whose outer product is SSIM's 2-D window."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _to_unit(x: np.ndarray) -> np.ndarray:
    """uint8 -> [0, 1]; floating arrays are taken to be in [0, 1] already."""
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float64)
    raise TypeError(f"ssim expects uint8 images or floats in [0, 1], got {x.dtype}")


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of (N, H, W, C) over H then W."""
    x = sliding_window_view(x, len(g), axis=1) @ g  # (N, H-k+1, W, C)
    return sliding_window_view(x, len(g), axis=2) @ g  # (N, H-k+1, W-k+1, C)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image SSIM, shape (N,), with data range 1 (uint8 images are divided by 255).

    Local statistics use a Gaussian window (size :data:`SSIM_WINDOW`, sigma
    :data:`SSIM_SIGMA`) with 'valid' filtering, so no padding invents structure at the
    border; the SSIM map is computed per channel and averaged over channels and positions.
    """
    a, b = _check_pair(a, b)
    x, y = _to_unit(a), _to_unit(b)
    if min(x.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"images of {x.shape[1:3]} px are smaller than the {SSIM_WINDOW} px SSIM window")
    g = gaussian_window()
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # (K * data range)^2 with data range 1
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    var_x = _filter_valid(x * x, g) - mu_x**2
    var_y = _filter_valid(y * y, g) - mu_y**2
    cov = _filter_valid(x * y, g) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).mean(axis=(1, 2, 3))
