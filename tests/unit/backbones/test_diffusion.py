"""The pixel diffusion backbone (backbones/diffusion.py): the noise schedule."""

from __future__ import annotations

import pytest
import torch

from dicap.backbones.diffusion import make_schedule

pytestmark = pytest.mark.usefixtures("single_thread")

T = 1000


def test_schedule_is_decreasing_in_unit_interval():
    a = make_schedule(T)
    assert a.shape == (T,)
    assert torch.all(a[1:] < a[:-1])
    assert 0 < float(a[-1]) < float(a[0]) < 1
    assert float(a[0]) > 0.999
