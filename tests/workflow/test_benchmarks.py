"""The benchmarks' own arithmetic, on CPU at tiny size: what they report must be what they measured.

The benchmarks are scripts users run (benchmarks/, the README's figures), not modules of the
package, so their smoke runs sit in the workflow tier: each runs a script's ``main`` in process,
end to end on tiny models (dicap.testing.tiny_models)."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import REPO

import paper_gpu_hours

STEPS, BATCH = 6, 2  # a few DDIM steps on two images: the smoke run takes seconds


def _evaluations_per_image(result: dict, batch: int, fraction: float) -> float:
    """The DDIM arithmetic per counterfactual, from the settings alone.

    Inversion walks round(depth * steps) moves plus the first one from x0; the guided
    regeneration walks back as many, two UNet images per step under classifier-free guidance
    (s not 0 or 1); the s = 1 round trip as many again, one image per step, for the first
    ceil(fraction * batch) rows of each batch only.
    """
    moves = round(result["inversion_depth"] * STEPS) + 1
    assert result["guide"] == "cfg"
    guided = 1 if result["guidance_scale"] in (0, 1) else 2
    return moves * (1 + guided) + moves * math.ceil(fraction * batch) / batch


def test_paper_gpu_hours_random_weights_tiny_reports_what_it_counted(single_thread, capsys):
    """--random-weights --tiny builds the tiny architectures, loads them through the pipeline's
    loaders and times generate(); the UNet hook's count must match the DDIM arithmetic, for the
    old path (round trip on every image) and the new one (on the configured share) alike."""
    result = paper_gpu_hours.main(["--random-weights", "--tiny", "--steps", str(STEPS), "--batch-size", str(BATCH),
                                   "--batches", "1", "--compare"])
    out = capsys.readouterr().out
    assert {"seconds_per_image", "counterfactuals", "gpu_hours", "unet_evals_per_image", "unet_share",
            "unet_flops_per_eval", "achieved_tflops", "peak_tflops", "peak_share", "peak_memory_gib"} <= set(result)
    assert result["steps"] == STEPS and result["batch_size"] == BATCH and result["image_size"] == 16
    fraction = paper_gpu_hours.load_config(REPO / "config.paper.yaml")["counterfactual"]["reconstruction_fraction"]
    assert result["reconstruction_fraction"] == fraction < 1  # the paper suite samples the round trip
    moves = round(result["inversion_depth"] * STEPS) + 1
    new, old = _evaluations_per_image(result, BATCH, fraction), _evaluations_per_image(result, BATCH, 1.0)
    assert old == moves * 4 and new < old
    assert result["unet_evals_per_image"] == pytest.approx(new)
    cmp = result["compare"]
    assert cmp["old_unet_evals_per_image"] == pytest.approx(old) and cmp["new_unet_evals_per_image"] == pytest.approx(new)
    assert cmp["eval_ratio"] == pytest.approx(old / new) and cmp["speedup"] > 0
    assert 0 < result["unet_share"] <= 1
    assert result["unet_flops_per_eval"] > 0 and result["achieved_tflops"] > 0
    assert result["peak_tflops"] is None and result["peak_share"] is None  # no peak on CPU
    assert result["peak_memory_gib"] is None and not result["compiled"]  # no CUDA: no memory figure, no compilation
    assert result["seconds_per_image"] > 0 and result["counterfactuals"] == 16 * 1098 * 3
    assert result["gpu_hours"] > 0
    assert result["gpu_hours"] == pytest.approx(result["counterfactuals"] * result["seconds_per_image"] / 3600)
    assert "random weights (tiny)" in out and "peak n/a" in out
    assert f"UNet: {new:g} image evaluations per counterfactual" in out
    assert f"round trip on every image {cmp['old_seconds_per_image']:.3f} s, {old:g} UNet evaluations" in out


def test_paper_gpu_hours_sweeps_batch_sizes_and_turns_the_round_trip_off(single_thread, capsys):
    """Several --batch-size values: one measurement each; at fraction 0 each image costs
    inversion + 2x guided = (k + 1) * 3 evaluations instead of (k + 1) * 4."""
    result = paper_gpu_hours.main(["--tiny", "--steps", str(STEPS), "--batch-size", "1", "3", "--batches", "1",
                                   "--reconstruction-fraction", "0"])
    capsys.readouterr()
    assert [r["batch_size"] for r in result["by_batch_size"]] == [1, 3] and result["batch_size"] == 1
    moves = round(result["inversion_depth"] * STEPS) + 1
    for r in result["by_batch_size"]:
        assert r["unet_evals_per_image"] == moves * 3 == _evaluations_per_image(r, r["batch_size"], 0.0)


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


def test_gpu_hours_benchmark_measures_the_shard_code_path(tmp_path, capsys):
    """benchmarks/paper_gpu_hours.py times generate() on a real checkpoint layout (tiny here)."""
    from dicap.testing.tiny_models import save_clip_text_encoder, save_latent_checkpoint, save_tiny_clip

    sd = save_clip_text_encoder(save_latent_checkpoint(tmp_path / "sd"))
    clip = save_tiny_clip(tmp_path / "clip")
    result = paper_gpu_hours.main(["--checkpoint", str(sd), "--image-size", "16", "--clip-model", f"local-dir:{clip}",
                                   "--clip-tag", "", "--batches", "1", "--steps", "6", "--batch-size", "2"])
    assert result["counterfactuals"] == 16 * 1098 * 3  # one per few-shot image of a base class, 3 seeds
    assert result["seconds_per_image"] > 0 and result["gpu_hours"] == pytest.approx(result["counterfactuals"] * result["seconds_per_image"] / 3600)
    assert "counterfactual stage: 52704 counterfactuals" in capsys.readouterr().out


def test_clip_encoding_tiny_times_every_mode_and_matches_fp32(single_thread, capsys):
    """benchmarks/clip_encoding.py --tiny: the old path and the new one in fp32 give the same
    features (cosine 1 to the new fp32 path), the bf16 modes stay close, every rate is positive."""
    import clip_encoding

    result = clip_encoding.main(["--tiny", "--images", "12", "--batch-size", "8", "--repeats", "1"])
    out = capsys.readouterr().out
    rows = {(r["mode"], r["source_size"]): r for r in result["results"]}
    assert set(rows) == {(m, s) for m in clip_encoding.MODES for s in (16, 37)}
    for (mode, _), r in rows.items():
        assert r["images_per_s"] > 0 and r["speedup_vs_old"] > 0
        assert r["min_cosine_vs_fp32"] >= (1 - 1e-6 if mode in ("old", "fp32") else 0.999)
    assert "16 px  bf16_autocast" in out and "37 px  old" in out


def test_text_task_step_tiny_agrees_with_itself_on_the_cpu_and_times_both_paths(single_thread, capsys):
    """benchmarks/text_task_step.py --tiny: on a CPU the 'device' is the CPU, so the two trainings
    agree exactly; both paths are timed on the same texts."""
    import text_task_step

    result = text_task_step.main(["--tiny", "--texts", "64", "--answers", "4", "--batch", "8", "--steps", "1"])
    assert result["device"] == "cpu" and result["max_context_difference"] == 0 and result["max_loss_difference"] == 0
    assert result["texts"] == 64 and result["subset_s"] > 0 and result["full_s"] > 0
    assert set(result["learners"].values()) == {"ok"}, result["learners"]
    assert "s/step" in capsys.readouterr().out
