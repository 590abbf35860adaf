"""The diffusion check (audit/diffusion_check.py): per-class reads of samples drawn from noise on
a tiny random UNet, and the verdict and its one-line refusal against thresholds.  The job that
refuses a model below the threshold, through the real ``dicap`` commands: tests/unit/test_guards.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicap.audit.diffusion_check import CHECKED_SCALE, check_report, class_reads
from dicap.audit.oracle import OracleNet

pytestmark = pytest.mark.usefixtures("single_thread")


def _pinned_oracle(n_classes: int, reads_as: int) -> OracleNet:
    """An 8 px oracle that reads every image as ``reads_as`` (n_classes: no object)."""
    oracle = OracleNet(n_classes, image_size=8, width=4).eval().requires_grad_(False)
    head = oracle.heads["class"]
    head.weight.zero_()
    head.bias.zero_()
    head.bias[reads_as] = 1.0
    return oracle


@pytest.mark.parametrize("reads_as", [0, 2, 3])
def test_class_reads_are_the_share_of_each_class_read_as_itself(diffusion, reads_as):
    reads = class_reads(diffusion, _pinned_oracle(3, reads_as), 8, steps=3, scales=[1.0, 2.5], samples_per_class=2, seed=0,
                        batch_size=4)
    assert list(reads) == [1.0, 2.5]
    expected = np.eye(3)[reads_as] if reads_as < 3 else np.zeros(3)  # a "no object" reading counts against every class
    for read in reads.values():
        np.testing.assert_array_equal(read, expected)


def test_class_reads_refuse_an_oracle_of_other_classes(diffusion):
    with pytest.raises(ValueError, match="oracle reads 5 classes but the diffusion model draws 3"):
        class_reads(diffusion, _pinned_oracle(5, 0), 8, steps=2, scales=[1.0], samples_per_class=1, seed=0)


READS = {1.0: np.array([1.0, 1.0, 1.0]), 3.0: np.array([0.95, 0.43, 1.0])}


@pytest.mark.parametrize("threshold, passed", [(0.0, True), (0.43, True), (0.44, False), (0.9, False), (1.0, False)])
def test_the_verdict_applies_the_threshold_to_the_weakest_class_at_the_counterfactuals_scale(threshold, passed):
    report = check_report(READS, ["circle", "square", "star"], threshold, "build/m", 3.0)
    assert report["passed"] is passed and report["checked_scale"] == 3.0 != CHECKED_SCALE
    assert report["reads"] == {"1": {"circle": 1.0, "square": 1.0, "star": 1.0}, "3": {"circle": 0.95, "square": 0.43, "star": 1.0}}
    if passed:
        assert report["refusal"] is None
    else:  # the s = 1 reads are all 1.0: the threshold is on the scale the counterfactuals are drawn at
        assert report["refusal"] == (
            f"diffusion model build/m reads class square at 0.43 < diffusion.check.min_class_read {threshold:g}: "
            "train it longer (diffusion.train.steps) or lower the threshold")
        assert "\n" not in report["refusal"]


def test_the_check_is_deterministic(diffusion):
    oracle = OracleNet(3, image_size=8, width=4).eval()
    torch.manual_seed(0)
    first = class_reads(diffusion, oracle, 8, steps=2, scales=[1.0], samples_per_class=3, seed=5, batch_size=2)
    again = class_reads(diffusion, oracle, 8, steps=2, scales=[1.0], samples_per_class=3, seed=5, batch_size=9)
    np.testing.assert_array_equal(first[1.0], again[1.0])
