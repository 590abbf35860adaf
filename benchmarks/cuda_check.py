"""The CUDA path of the embedded suite's jobs, end to end, on a tiny config.

    python benchmarks/cuda_check.py            # on a machine with a GPU

Runs the same ``dicap`` commands the Snakemake rules run (dataset, split, both backbones,
one counterfactual shard, features, all three prompt methods, evaluation) with CUDA
visible, then regenerates the same shard on the CPU and prints how far the two agree and
how long each took.  Not part of CI: CI machines have no GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import yaml  # noqa: E402

from dicap.io import load_arrays  # noqa: E402
from dicap.prompting.methods import method_params  # noqa: E402

METHODS = ("zeroshot", "coop", "dicap")


def dicap(*args: str, cpu: bool = False) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dicap.cli", *args], check=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    import torch

    assert torch.cuda.is_available(), "no CUDA device visible"
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["data"].update(pretrain_per_class=200, test_per_class=30)
    config["clip"]["train"]["steps"] = 300
    config["diffusion"]["train"]["steps"] = 300
    j = lambda obj: json.dumps(obj)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        data, clip_dir, diff_dir = t / "data", t / "clip", t / "diffusion"
        clip_report, text_features = t / "clip.json", t / "text.safetensors"
        times = {}
        times["prepare_dataset"] = dicap("prepare_dataset", "--dataset", "shapes", "--params", j(config["data"]), "--out", str(data))
        dicap("make_split", "--dataset-dir", str(data), "--seed", "1", "--params", j(config["data"]), "--out", str(t / "split.parquet"))
        times["clip_backbone (cuda)"] = dicap("clip_backbone", "--dataset-dir", str(data), "--params", j(config["clip"]), "--out", str(clip_dir),
                                              "--report", str(clip_report), "--class-text-features", str(text_features))
        times["diffusion_backbone (cuda)"] = dicap("diffusion_backbone", "--dataset-dir", str(data), "--params", j(config["diffusion"]),
                                                   "--out", str(diff_dir), "--report", str(t / "diffusion.json"))
        shard = ["counterfactual_shard", "--dataset-dir", str(data), "--clip-dir", str(clip_dir), "--diffusion-dir", str(diff_dir),
                 "--class-text-features", str(text_features),
                 "--split", str(t / "split.parquet"), "--seed", "1", "--shard", "0", "--shards", "1", "--params", j(config["counterfactual"])]
        times["counterfactual_shard (cuda)"] = dicap(*shard, "--out-images", str(t / "cf.safetensors"), "--out-table", str(t / "cf.parquet"))
        times["counterfactual_shard (cpu)"] = dicap(*shard, "--out-images", str(t / "cf_cpu.safetensors"), "--out-table", str(t / "cf_cpu.parquet"), cpu=True)
        # the agreement first: a run cut short by its time limit still reports it
        gpu, cpu = load_arrays(t / "cf.safetensors")["images"], load_arrays(t / "cf_cpu.safetensors")["images"]
        diff = np.abs(gpu.astype(int) - cpu.astype(int))
        print(f"cuda vs cpu counterfactuals: {len(gpu)} images, mean |diff| {diff.mean():.3f} (0-255), "
              f"max {diff.max()}, share of pixels within 2 levels {(diff <= 2).mean():.4f}", flush=True)
        dicap("encode_train_features", "--dataset-dir", str(data), "--clip-dir", str(clip_dir), "--split", str(t / "split.parquet"),
              "--counterfactual-images", str(t / "cf.safetensors"), "--counterfactual-table", str(t / "cf.parquet"), "--variant", "main",
              "--out", str(t / "feat.safetensors"))
        dicap("encode_eval_features", "--dataset-dir", str(data), "--clip-dir", str(clip_dir), "--out", str(t / "eval.safetensors"))
        prompts = []
        params = {m: method_params(config["prompt"], m) for m in METHODS}  # what the rules pass (training_params)
        for method in METHODS:
            out = t / f"{method}.safetensors"
            times[f"train_prompt {method} (cuda)"] = dicap(
                "train_prompt", "--dataset-dir", str(data), "--clip-dir", str(clip_dir), "--features", str(t / "feat.safetensors"),
                "--method", method, "--seed", "1", "--params", j(params[method]), "--out", str(out))
            prompts.append(str(out))
        times["evaluate (cuda)"] = dicap("evaluate", "--dataset-dir", str(data), "--clip-dir", str(clip_dir),
                                         "--features", str(t / "eval.safetensors"), "--prompts", *prompts, "--methods", *METHODS,
                                         "--seed", "1", "--params", j(params), "--out", str(t / "metrics.csv"))
        print((t / "metrics.csv").read_text())
        print("clip report:", json.loads(clip_report.read_text())["zero_shot_accuracy"])
        for name, seconds in times.items():
            print(f"{name:32s} {seconds:7.1f} s (including ~process start and imports)")


if __name__ == "__main__":
    main()
