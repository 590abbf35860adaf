"""The atomic writers: outputs readable by the group on a shared disk, following the umask."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from dicap.io import atomic_dir, save_arrays, write_json


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o027, 0o077])
def test_outputs_follow_the_umask(tmp_path, umask):
    before = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        save_arrays(tmp_path / "b.safetensors", {"x": np.zeros(3, np.float32)})
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "w.txt").write_text("w")
    finally:
        os.umask(before)
    for name in ("a.json", "b.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~umask
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left behind"
