"""GPU hours of the paper suite's counterfactual stage, from a measured per-image cost.

    python benchmarks/paper_gpu_hours.py --checkpoint stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --cache-dir CACHE --clip-model ViT-B-16-quickgelu --clip-tag openai --clip-cache-dir CACHE
    python benchmarks/paper_gpu_hours.py --random-weights            # same shapes, nothing downloaded
    python benchmarks/paper_gpu_hours.py --random-weights --tiny     # CPU smoke run (seconds)
    python benchmarks/paper_gpu_hours.py --random-weights --batch-size 8 16 32 --compare --compile

Run it on one GPU node of the cluster: it loads the latent diffusion model and CLIP named
in ``config.paper.yaml`` (or on the command line), times ``generate()`` - the very function a
``counterfactual_shard`` job runs: VAE encoding, DDIM inversion, guided regeneration, the
s = 1 reconstruction, decoding and the CLIP check - on random images in batches of
``counterfactual.batch_size``, and multiplies the measured seconds per image by the number
of counterfactuals the suite generates (one per few-shot image of a base class: 16 shots x
1098 base classes x 3 seeds).  The first batch is a warm-up and is not timed.

``--random-weights`` writes Stable Diffusion 1.5 and ViT-B/16 with random weights in their
real layouts to a temporary folder and loads them through the same loaders
(``random_weights.py``): a forward pass costs the same whatever the weights, so any GPU
can be measured without a download.  ``--tiny`` uses the test suite's tiny shapes instead.

Beside the seconds per counterfactual it reports where they go: the UNet evaluations per
counterfactual (counted by a hook on the UNet, one per image in each call), the share of
the wall time spent inside the UNet, the UNet's FLOPs per image evaluation (counted by
``torch.utils.flop_counter.FlopCounterMode`` on one evaluation) and so the TFLOP/s the UNet
achieves and their share of the device's dense bf16 peak (``--peak-tflops``).

``--batch-size`` takes several values (one measurement each, on the same loaded models; peak
GPU memory is reported on CUDA).  ``--compare`` times each batch size twice: with the s = 1
round trip on every image (``reconstruction_fraction`` 1) and on the
configured share (``--reconstruction-fraction``, default the paper config's), and prints the
ratio of the seconds per counterfactual and both UNet evaluation counts.  ``--compile``
then compiles the UNet as ``diffusion.pretrained.compile`` does (CUDA only, after the FLOPs
count) and measures each batch size again, printing the compiled/eager ratio: each change's
gain apart, from one loaded model.

The class counts are those of CoOp's splits (base = the first ceil(n/2) labels).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dicap.backbones.clip import load_clip  # noqa: E402
from dicap.backbones.guides import CLIP_GRAD_BATCH_SIZE, make_guide  # noqa: E402
from dicap.backbones.latent_diffusion import LatentDiffusionBundle, compile_unet, load_latent_diffusion, resolve_dtype  # noqa: E402
from dicap.config import load_config  # noqa: E402
from dicap.counterfactual import generate  # noqa: E402
from dicap.runtime import device  # noqa: E402
from random_weights import SHAPES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"imagenet": 1000, "caltech101": 100, "oxford_pets": 37, "stanford_cars": 196, "oxford_flowers": 102,
           "food101": 101, "fgvc_aircraft": 100, "sun397": 397, "dtd": 47, "eurosat": 10, "ucf101": 101}
# Dense bf16 tensor-core peak in TFLOP/s, by a substring of the CUDA device name (first match
# wins).  H200: 790, the figure docs/cluster.md uses; NVIDIA's datasheet gives 989 for H200 SXM (as for
# H100 SXM) and 835 for H200 NVL - pass --peak-tflops to compare against another figure.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 790.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0),
)


class RandomImages:
    """Stands in for a dataset store: the cost does not depend on what the pixels show."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.rng = size, np.random.default_rng(seed)

    def pixels(self, rows: pd.DataFrame) -> np.ndarray:
        return self.rng.integers(0, 256, (len(rows), self.size, self.size, 3), dtype=np.uint8)


class UnetMeter:
    """Images the UNet evaluates and wall seconds spent inside it, from hooks on its forward.

    Counting the images that really go through the UNet (a classifier-free-guided step
    evaluates each image twice, in one call of twice the batch) checks the step arithmetic
    instead of assuming it.  On CUDA the hooks synchronise before and after each call, so the
    time is the GPU's, not the launch's; a UNet call is long enough (tens of ms and more at
    SD size) that the lost CPU/GPU overlap is noise.
    """

    def __init__(self, unet: torch.nn.Module, dev: torch.device):
        self.dev = dev
        self.images, self.seconds, self._start = 0, 0.0, 0.0
        self._handles = [unet.register_forward_pre_hook(self._before, with_kwargs=True),
                         unet.register_forward_hook(self._after)]

    def _sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    def _before(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs["sample"]
        self.images += len(sample)
        self._sync()
        self._start = time.perf_counter()

    def _after(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._start

    def reset(self) -> None:
        self.images, self.seconds = 0, 0.0

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def unet_flops_per_image(diffusion: LatentDiffusionBundle) -> int:
    """FLOPs of one UNet evaluation of one image (with its prompt), counted, not estimated.

    Counted under the math attention kernel: ``FlopCounterMode`` knows the CUDA flash and
    memory-efficient attention kernels but not the CPU's, while the math kernel's two
    matmuls are the same FLOPs on every device.
    """
    dev = next(diffusion.unet.parameters()).device
    x = torch.randn(1, diffusion.unet.config.in_channels, *diffusion.latent_shape, device=dev)
    label = torch.zeros(1, dtype=torch.long, device=dev)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        diffusion.eps(x, diffusion.num_train_timesteps // 2, label)
    return int(counter.get_total_flops())


def peak_tflops(dev: torch.device, given: float | None) -> float | None:
    """``given``, else the device's dense bf16 peak from :data:`PEAK_BF16_TFLOPS`; None if unknown (CPU)."""
    if given is not None or dev.type != "cuda":
        return given
    name = torch.cuda.get_device_name(dev)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def counterfactuals_per_seed(shots: int) -> dict[str, int]:
    return {name: shots * math.ceil(n / 2) for name, n in CLASSES.items()}


def parse_args(argv: list[str] | None, paper: dict[str, Any]) -> argparse.Namespace:
    pre, clip = paper["diffusion"]["pretrained"], paper["clip"]["pretrained"]
    params = paper["counterfactual"]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=pre["path"])
    p.add_argument("--cache-dir", default=pre.get("cache_dir"))
    p.add_argument("--dtype", default=pre["dtype"], help="UNet/VAE dtype on CUDA (CPU runs stay float32, as jobs do)")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"pixels (default: {pre['image_size']}, the paper config's; with --random-weights the shapes' own)")
    p.add_argument("--clip-model", default=clip["model"])
    p.add_argument("--clip-tag", default=clip["tag"])
    p.add_argument("--clip-cache-dir", default=clip.get("cache_dir"))
    p.add_argument("--random-weights", action="store_true",
                   help="build the architectures from their configs with random weights instead of loading "
                        "--checkpoint and --clip-*: no download")
    p.add_argument("--shapes", choices=sorted(SHAPES), default="sd15", help="with --random-weights: which architectures")
    p.add_argument("--tiny", dest="shapes", action="store_const", const="tiny",
                   help="the test suite's tiny shapes (implies --random-weights): a CPU smoke run")
    p.add_argument("--steps", type=int, default=params["steps"], help="DDIM steps (default: the paper config's)")
    p.add_argument("--batch-size", type=int, nargs="+", default=[params["batch_size"]],
                   help="images per generate() batch; several values measure each (the first is the headline)")
    p.add_argument("--reconstruction-fraction", type=float, default=params["reconstruction_fraction"],
                   help="share of each batch given the s = 1 round trip (default: the paper config's)")
    p.add_argument("--compare", action="store_true",
                   help="also time the old path (round trip on every image) and print the ratio")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet (CUDA only, as diffusion.pretrained.compile)")
    p.add_argument("--batches", type=int, default=3, help="timed batches after one warm-up batch")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense bf16 peak (default: by device name, H200 = 790; n/a on CPU)")
    a = p.parse_args(argv)
    a.random_weights = a.random_weights or a.shapes == "tiny"
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    paper = load_config(ROOT / "config.paper.yaml")  # with the schema's defaults: the suite's whole config
    a = parse_args(argv, paper)
    # `timeout` and schedulers stop a run with SIGTERM: exit through Python so the temporary
    # folder of random weights (3.6 GB at SD 1.5's size) is removed, not left in /tmp.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    dev = device()
    dtype = a.dtype if dev.type == "cuda" else "float32"
    with tempfile.TemporaryDirectory(prefix="paper_gpu_hours_") as tmp:
        if a.random_weights:
            models = SHAPES[a.shapes](Path(tmp), resolve_dtype(dtype, dev))
            checkpoint, cache_dir, clip_spec = models.checkpoint, None, models.clip
            image_size = a.image_size or models.image_size
        else:
            checkpoint, cache_dir = a.checkpoint, a.cache_dir
            clip_spec = {"model": a.clip_model, "tag": a.clip_tag or None, "cache_dir": a.clip_cache_dir}
            image_size = a.image_size or paper["diffusion"]["pretrained"]["image_size"]
        return measure(paper, checkpoint, cache_dir, clip_spec, image_size, dtype, dev, a)


def measure(paper: dict[str, Any], checkpoint: str | Path, cache_dir: str | None, clip_spec: dict[str, Any],
            image_size: int, dtype: str, dev: torch.device, a: argparse.Namespace) -> dict[str, Any]:
    """Load the models once, time ``generate()`` per batch size (and path) and project the suite's hours.

    Returns the first batch size's measurement, with every batch size's in ``by_batch_size``.
    """
    pre = paper["diffusion"]["pretrained"]
    names = [f"class {i}" for i in range(10)]
    diffusion = load_latent_diffusion(checkpoint, names, pre["template"], dtype=dtype, device=dev,
                                      image_size=image_size, cache_dir=cache_dir)
    clip = load_clip(clip_spec)
    clip.model.to(dev)
    text = clip.encode_texts([paper["clip"]["template"].format(n) for n in names])
    guide = make_guide(paper["counterfactual"]["guide"], diffusion, None, clip=clip, text_features=text,
                       grad_batch_size=CLIP_GRAD_BATCH_SIZE)
    flops = unet_flops_per_image(diffusion)  # eager, before any compilation: FlopCounterMode counts aten ops
    source = f"random weights ({a.shapes})" if a.random_weights else str(checkpoint)
    results = [run_batch_sizes(diffusion, guide, flops, paper, image_size, dtype, dev, a, source, compiled=False)]
    if a.compile and compile_unet(diffusion, dev):  # then the same batch sizes again, compiled: each gain apart
        results.append(run_batch_sizes(diffusion, guide, flops, paper, image_size, dtype, dev, a, source, compiled=True))
        for eager, fast in zip(*results):
            fast["compile_speedup"] = eager["seconds_per_image"] / fast["seconds_per_image"]
            print(f"compile, batch {fast['batch_size']}: eager {eager['seconds_per_image']:.3f} s, compiled "
                  f"{fast['seconds_per_image']:.3f} s per counterfactual: {fast['compile_speedup']:.2f}x faster "
                  f"(the warm-up batch, compilation included, took {fast['warmup_seconds']:.0f} s)")
    best = results[-1]
    return best[0] | {"by_batch_size": best, "eager": results[0]}


def run_batch_sizes(diffusion: LatentDiffusionBundle, guide: Any, flops: int, paper: dict[str, Any], image_size: int,
                    dtype: str, dev: torch.device, a: argparse.Namespace, source: str, compiled: bool) -> list[dict[str, Any]]:
    """One measurement per ``--batch-size``; with ``--compare`` (eager only) the old path's too."""
    results = []
    for bs in a.batch_size:
        params = {**paper["counterfactual"], "steps": a.steps, "batch_size": bs, "reconstruction_fraction": a.reconstruction_fraction}
        print(f"device: {torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}; {source}; {dtype}; "
              f"steps {params['steps']}, depth {params['inversion_depth']}, guidance {params['guidance_scale']}, "
              f"batch {bs}, guide {params['guide']}, {image_size} px, round trip on {a.reconstruction_fraction:g} "
              f"of each batch, UNet {'compiled' if compiled else 'eager'}", flush=True)
        timed = time_generate(diffusion, guide, params, image_size, dev, a.batches)
        result = report(timed, flops, paper, dev, a)
        result |= {"image_size": image_size, "compiled": compiled, "warmup_seconds": timed["warmup_seconds"]}
        if a.compare and not compiled:
            old = time_generate(diffusion, guide, {**params, "reconstruction_fraction": 1.0}, image_size, dev, a.batches)
            result["compare"] = compare(old, result)
        results.append(result)
    return results


def time_generate(diffusion: LatentDiffusionBundle, guide: Any, params: dict[str, Any], image_size: int,
                  dev: torch.device, batches: int) -> dict[str, Any]:
    """Seconds per counterfactual (median over batches), UNet images and seconds, peak GPU memory.

    ``batches`` timed batches of ``params['batch_size']`` random images follow one warm-up batch.
    """
    meter = UnetMeter(diffusion.unet, dev)
    store, bs = RandomImages(image_size), params["batch_size"]
    seconds, wall, unet_seconds, unet_images = [], 0.0, 0.0, 0
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for batch in range(batches + 1):
        rows = pd.DataFrame({"row": range(bs), "split": "train", "index": range(bs), "label": [i % 5 for i in range(bs)]})
        meter.reset()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        generate.generate(store, rows, np.array([5 + i % 5 for i in range(bs)]), diffusion, guide, params)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if not batch:  # the first batch warms up kernels and caches (and compiles a compiled UNet)
            warmup = elapsed
        else:
            seconds.append(elapsed / bs)
            wall, unet_seconds, unet_images = wall + elapsed, unet_seconds + meter.seconds, unet_images + meter.images
    meter.remove()
    return {"params": params, "seconds_per_image": float(np.median(seconds)), "batches": len(seconds), "wall": wall,
            "warmup_seconds": warmup,
            "unet_seconds": unet_seconds, "unet_images": unet_images, "unet_evals_per_image": unet_images / (batches * bs),
            "peak_memory_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None}


def report(t: dict[str, Any], flops: int, paper: dict[str, Any], dev: torch.device, a: argparse.Namespace) -> dict[str, Any]:
    """Print one measurement and the suite's projected hours; return the figures."""
    params, per_image, evals = t["params"], t["seconds_per_image"], t["unet_evals_per_image"]
    achieved = t["unet_images"] * flops / t["unet_seconds"] / 1e12
    peak = peak_tflops(dev, a.peak_tflops)
    per_seed = counterfactuals_per_seed(paper["data"]["shots"])
    unit = "GPU h" if dev.type == "cuda" else "h here"  # a CPU number says nothing about a GPU
    total = sum(per_seed.values()) * len(paper["seeds"])
    print(f"measured: {per_image:.3f} s per counterfactual (median of {t['batches']} batches)"
          + (f", peak GPU memory {t['peak_memory_gib']:.2f} GiB" if t["peak_memory_gib"] is not None else ""))
    print(f"UNet: {evals:g} image evaluations per counterfactual, {t['unet_seconds'] / t['wall']:.1%} of the wall time, "
          f"{flops / 1e9:.4g} GFLOP per evaluation")
    print(f"UNet throughput: {achieved:.3g} TFLOP/s achieved, "
          + (f"{achieved / peak:.1%} of a {peak:g} TFLOP/s bf16 peak" if peak else "peak n/a"))
    for name, n in per_seed.items():
        print(f"  {name:15s} {n * len(paper['seeds']):6d} counterfactuals  {n * len(paper['seeds']) * per_image / 3600:7.2f} {unit}")
    print(f"counterfactual stage: {total} counterfactuals, {total * per_image / 3600:.1f} {unit}")
    return {
        "seconds_per_image": per_image, "counterfactuals": total, "gpu_hours": total * per_image / 3600,
        "unet_evals_per_image": evals, "unet_share": t["unet_seconds"] / t["wall"], "unet_flops_per_eval": flops,
        "achieved_tflops": achieved, "peak_tflops": peak, "peak_share": achieved / peak if peak else None,
        "peak_memory_gib": t["peak_memory_gib"], "steps": params["steps"], "inversion_depth": params["inversion_depth"],
        "guidance_scale": params["guidance_scale"], "guide": params["guide"], "batch_size": params["batch_size"],
        "reconstruction_fraction": params["reconstruction_fraction"],
    }


def compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Print and return old (round trip on every image) against new, per counterfactual."""
    ratio = old["seconds_per_image"] / new["seconds_per_image"]
    evals = old["unet_evals_per_image"] / new["unet_evals_per_image"]
    print(f"compare, batch {new['batch_size']}: round trip on every image {old['seconds_per_image']:.3f} s, "
          f"{old['unet_evals_per_image']:g} UNet evaluations per counterfactual; on {new['reconstruction_fraction']:g} "
          f"of each batch {new['seconds_per_image']:.3f} s, {new['unet_evals_per_image']:g} evaluations: "
          f"{ratio:.2f}x faster ({evals:.2f}x fewer evaluations)")
    return {"old_seconds_per_image": old["seconds_per_image"], "new_seconds_per_image": new["seconds_per_image"],
            "old_unet_evals_per_image": old["unet_evals_per_image"], "new_unet_evals_per_image": new["unet_evals_per_image"],
            "speedup": ratio, "eval_ratio": evals}


if __name__ == "__main__":
    main()
