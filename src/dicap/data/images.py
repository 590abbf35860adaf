"""Image files on disk -> the uint8 arrays every rule works with (the paper suite's loader).

The embedded suite keeps its rendered images in one safetensors file; real datasets stay
as the JPEGs they were downloaded as and are decoded on demand, a batch at a time, so a
split of 50 000 ImageNet images never has to fit in memory at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Decode one file as RGB, resize its shorter side to ``size`` (bicubic), centre-crop.

    A file that does not decode stops the job with its path: a corrupt image is refused,
    not skipped, so no two runs can silently train on different data.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            w, h = image.size
            factor = size / min(w, h)
            image = image.resize((max(size, round(w * factor)), max(size, round(h * factor))), Image.Resampling.BICUBIC)
            w, h = image.size
            left, top = (w - size) // 2, (h - size) // 2
            return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise ValueError(f"image {path} cannot be decoded ({err}); replace the file or re-download its dataset") from None


def load_images(paths: Sequence[str | Path], size: int) -> np.ndarray:
    """uint8 (N, size, size, 3) for ``paths``, in order."""
    if not paths:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([load_image(p, size) for p in paths])
