"""The benchmarks' own arithmetic, on CPU at tiny size: what they report must be what they measured."""

from __future__ import annotations

import sys

import pytest
import torch

from snakemake_runner import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import paper_gpu_hours  # noqa: E402

STEPS, BATCH = 6, 2  # a few DDIM steps on two images: the smoke run takes seconds


def test_paper_gpu_hours_random_weights_tiny_reports_what_it_counted(single_thread, capsys):
    """--random-weights --tiny builds the tiny architectures, loads them through the pipeline's
    loaders and times generate(); the UNet hook's count must match the DDIM arithmetic."""
    result = paper_gpu_hours.main(["--random-weights", "--tiny", "--steps", str(STEPS), "--batch-size", str(BATCH),
                                   "--batches", "1"])
    out = capsys.readouterr().out
    assert {"seconds_per_image", "counterfactuals", "gpu_hours", "unet_evals_per_image", "unet_share",
            "unet_flops_per_eval", "achieved_tflops", "peak_tflops", "peak_share"} <= set(result)
    assert result["steps"] == STEPS and result["batch_size"] == BATCH and result["image_size"] == 16
    # Per image: inversion walks round(depth * steps) moves plus the first one from x0; the
    # guided regeneration walks back as many, two UNet images per step under classifier-free
    # guidance (s not 0 or 1); the s = 1 reconstruction as many again, one image per step.
    evaluations = round(result["inversion_depth"] * STEPS) + 1
    assert result["guide"] == "cfg"
    guided = 1 if result["guidance_scale"] in (0, 1) else 2
    assert result["unet_evals_per_image"] == evaluations * (1 + guided + 1)
    assert 0 < result["unet_share"] <= 1
    assert result["unet_flops_per_eval"] > 0 and result["achieved_tflops"] > 0
    assert result["peak_tflops"] is None and result["peak_share"] is None  # no peak on CPU
    assert result["seconds_per_image"] > 0 and result["counterfactuals"] == 16 * 1098 * 3
    assert result["gpu_hours"] > 0
    assert result["gpu_hours"] == pytest.approx(result["counterfactuals"] * result["seconds_per_image"] / 3600)
    assert "random weights (tiny)" in out and "peak n/a" in out
    assert f"UNet: {evaluations * 4:g} image evaluations per counterfactual" in out


def test_paper_gpu_hours_tiny_implies_random_weights_and_sd15_is_the_default():
    paper = paper_gpu_hours.load_config(REPO / "config.paper.yaml")
    assert paper_gpu_hours.parse_args(["--tiny"], paper).random_weights
    default = paper_gpu_hours.parse_args(["--random-weights"], paper)
    assert default.shapes == "sd15" and default.steps == paper["counterfactual"]["steps"]
    assert not paper_gpu_hours.parse_args([], paper).random_weights


@pytest.mark.parametrize("name, peak", [("NVIDIA H200", 790.0), ("NVIDIA H100 PCIe", 756.0),
                                        ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA GeForce GTX 1080", None)])
def test_peak_tflops_by_device_name(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: name)
    assert paper_gpu_hours.peak_tflops(torch.device("cuda"), None) == peak
    assert paper_gpu_hours.peak_tflops(torch.device("cuda"), 123.0) == 123.0  # --peak-tflops wins
    assert paper_gpu_hours.peak_tflops(torch.device("cpu"), None) is None
