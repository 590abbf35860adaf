"""Counterfactual generation throughput: batched generator vs a one-image-at-a-time loop.

    python benchmarks/counterfactual_throughput.py            # CPU (and CUDA + bf16 if present)
    python benchmarks/counterfactual_throughput.py --images 32 --guide classifier

Both runs use the same inputs and the same code (``ddim.invert`` then ``ddim.regenerate``);
the loop just calls it with batches of one.  The UNet has the embedded suite's default
size with random weights (throughput does not depend on training).  The script also
reports the share of time spent in UNet forwards and, for the classifier guide, in the
guide's forward + backward pass.  Ratios are measured in one run, so they compare like
with like on whatever machine runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dicap.backbones.diffusion import DiffusionBundle, build_unet, make_schedule  # noqa: E402
from dicap.backbones.guides import ClassifierFreeGuide, NoisyClassifier, NoisyClassifierGuide  # noqa: E402
from dicap.counterfactual import ddim  # noqa: E402


class Timer:
    """Accumulates wall time of wrapped calls (synchronising CUDA so the time is real)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            self.seconds += time.perf_counter() - start
            return out

        return timed

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def build(guide_kind: str, device: torch.device, n_classes: int = 10):
    torch.manual_seed(0)
    unet = build_unet(16, n_classes, {"block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8})
    bundle = DiffusionBundle(unet.eval().requires_grad_(False).to(device), make_schedule(1000), n_classes)
    if guide_kind == "cfg":
        return bundle, ClassifierFreeGuide(bundle)
    classifier = NoisyClassifier(n_classes, 32).eval().requires_grad_(False).to(device)
    return bundle, NoisyClassifierGuide(bundle, classifier)


def run(bundle, guide, x0, y, y_cf, path, batch: int, autocast: bool) -> dict[str, float]:
    """Generate for all images in chunks of ``batch``; returns total, UNet and guide-own seconds."""
    device = x0.device
    unet, in_guide, guided = Timer(device), Timer(device), Timer(device)
    inside = {"guide": False}
    original_eps, original_guided = bundle.eps, guide.guided_eps

    def eps(*args, **kwargs):
        return (in_guide if inside["guide"] else unet).wrap(original_eps)(*args, **kwargs)

    def guided_eps(*args, **kwargs):
        inside["guide"] = True
        try:
            return guided.wrap(original_guided)(*args, **kwargs)
        finally:
            inside["guide"] = False

    bundle.eps, guide.guided_eps = eps, guided_eps
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    try:
        unet.sync()
        start = time.perf_counter()
        with ctx:
            for i in range(0, len(x0), batch):
                sl = slice(i, i + batch)
                x_t = ddim.invert(bundle, guide, x0[sl], y[sl], path)
                ddim.regenerate(bundle, guide, x_t, y_cf[sl], path, 3.0)
        unet.sync()
        total = time.perf_counter() - start
    finally:
        bundle.eps, guide.guided_eps = original_eps, original_guided
    return {"total": total, "unet": unet.seconds + in_guide.seconds, "guide_own": guided.seconds - in_guide.seconds}


def report(device: torch.device, guide_kind: str, n: int, steps: int, depth: float, autocast: bool) -> None:
    bundle, guide = build(guide_kind, device)
    gen = torch.Generator().manual_seed(1)
    x0 = (torch.rand(n, 3, 16, 16, generator=gen) * 2 - 1).to(device)
    y = torch.randint(0, 5, (n,), generator=gen).to(device)
    y_cf = ((y + 1) % 5).to(device)
    path = ddim.timestep_path(1000, steps, depth)
    run(bundle, guide, x0[:2], y[:2], y_cf[:2], path, 2, autocast)  # warm-up (kernels, allocator)
    batched = run(bundle, guide, x0, y, y_cf, path, n, autocast)
    looped = run(bundle, guide, x0, y, y_cf, path, 1, autocast)
    label = f"{device.type}{' bf16 autocast' if autocast else ''}, guide {guide_kind}, {n} images, {len(path) - 1} steps each way"
    print(f"\n[{label}]")
    for name, t in (("batched", batched), ("per-image loop", looped)):
        shares = f"UNet forwards {100 * t['unet'] / t['total']:.0f}%"
        if guide_kind == "classifier":
            shares += f", guide forward+backward {100 * t['guide_own'] / t['total']:.0f}%"
        print(f"  {name:15s} {n / t['total']:9.1f} images/s  ({t['total']:.2f} s; {shares})")
    print(f"  batched / per-image speed-up: {looped['total'] / batched['total']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--depth", type=float, default=0.8)
    parser.add_argument("--guide", choices=["cfg", "classifier", "both"], default="both")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kinds = ["cfg", "classifier"] if args.guide == "both" else [args.guide]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        for kind in kinds:
            report(device, kind, args.images, args.steps, args.depth, autocast=False)
            if device.type == "cuda":
                report(device, kind, args.images, args.steps, args.depth, autocast=True)


if __name__ == "__main__":
    main()
