"""Image files (data/images.py): loaded square at the model's size; a corrupt one is refused by path."""

from __future__ import annotations

import numpy as np
import pytest


def test_image_files_load_square_and_corrupt_ones_are_refused_by_path(tmp_path):
    from PIL import Image

    from dicap.data.images import load_images

    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "wide.jpg")
    Image.new("L", (10, 30), 128).save(tmp_path / "tall_grey.png")
    pixels = load_images([tmp_path / "wide.jpg", tmp_path / "tall_grey.png"], 16)
    assert pixels.shape == (2, 16, 16, 3) and pixels.dtype == np.uint8
    assert abs(int(pixels[0, 8, 8, 0]) - 255) < 8 and (pixels[1] == pixels[1, 0, 0, 0]).all()
    (tmp_path / "broken.jpg").write_bytes((tmp_path / "wide.jpg").read_bytes()[:40])
    with pytest.raises(ValueError, match="broken.jpg"):
        load_images([tmp_path / "broken.jpg"], 16)
