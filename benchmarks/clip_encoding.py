"""Images per second through the project's CLIP image-encoding path, old and new.

    python benchmarks/clip_encoding.py --random-weights        # ViT-B-16, 224 px input, nothing downloaded
    python benchmarks/clip_encoding.py --tiny                  # CPU smoke run (seconds)

Times :meth:`dicap.backbones.clip.ClipBundle.encode_images` - what ``clip_backbone``,
``features`` and the centroid sampling run - on random uint8 images of two sizes: the model's
own (224 px for ViT-B/16) and 512 px (the paper suite's image size; CLIP resizes it).  Each
row of the table is one way of running it:

* ``old`` - the earlier path, kept here verbatim as the baseline (:func:`old_encode_images`): uint8
  images become float32 and are resized and normalised on the CPU, then moved to the model;
* ``fp32`` - the new path: uint8 moves to the model's device first (pinned, non-blocking on
  CUDA) and the conversion, bicubic resize and normalisation run there;
* ``bf16_autocast`` - the new path under bfloat16 autocast (fp32 weights);
* ``bf16`` - the new path with the weights cast to bfloat16 (the old path fails there).

Beside images/s it prints the speed-up over ``old`` and the least cosine similarity of each
row's features to the new fp32 features of the same images (1 = identical).  On a CPU the
old and new fp32 paths do the same work, so their ratio is about 1: the gain this targets is a
GPU's, where the old path resizes on the CPU.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dicap.backbones.clip import ClipBundle, load_clip  # noqa: E402
from dicap.runtime import device  # noqa: E402
from random_weights import SD15_CLIP_MODEL  # noqa: E402

MODES = ("old", "fp32", "bf16_autocast", "bf16")


@torch.no_grad()
def old_encode_images(bundle: ClipBundle, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """``ClipBundle.encode_images`` as it was first written: preprocessing on the CPU, fp32 only."""
    dev = next(bundle.model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.as_tensor(images[i : i + batch_size]).permute(0, 3, 1, 2).float() / 255.0
        out.append(bundle.model.encode_image(bundle.normalise(x).to(dev), normalize=True).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def tiny_clip(root: Path) -> Path:
    """The test suite's tiny open_clip model (``dicap.testing.tiny_models``), saved under ``root``."""
    from dicap.testing.tiny_models import save_tiny_clip

    return save_tiny_clip(root)


def bundles(base: ClipBundle) -> dict[str, ClipBundle]:
    """One bundle per mode; ``bf16`` gets its own bfloat16 copy of the weights."""
    low = copy.deepcopy(base.model).to(torch.bfloat16)
    fields = dict(tokenizer=base.tokenizer, image_size=base.image_size, mean=base.mean, std=base.std)
    return {"old": base, "fp32": base, "bf16_autocast": ClipBundle(base.model, precision="bf16_autocast", **fields),
            "bf16": ClipBundle(low, precision="bf16", **fields)}


def encode(mode: str, bundle: ClipBundle, images: np.ndarray, batch_size: int) -> torch.Tensor:
    return old_encode_images(bundle, images, batch_size) if mode == "old" else bundle.encode_images(images, batch_size)


def time_mode(mode: str, bundle: ClipBundle, images: np.ndarray, batch_size: int, repeats: int) -> tuple[float, torch.Tensor]:
    """Best-of-``repeats`` images/s over all ``images`` (one warm-up batch first) and the features.

    ``encode_images`` returns CPU tensors, so each timed call ends with the GPU's work done.
    """
    encode(mode, bundle, images[:batch_size], batch_size)
    best, features = 0.0, torch.zeros(0)
    for _ in range(repeats):
        start = time.perf_counter()
        features = encode(mode, bundle, images, batch_size)
        best = max(best, len(images) / (time.perf_counter() - start))
    return best, features


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=1).min())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--random-weights", action="store_true", help=f"{SD15_CLIP_MODEL} with random weights (no download)")
    p.add_argument("--model", default=SD15_CLIP_MODEL, help="open_clip model name for --random-weights")
    p.add_argument("--tiny", action="store_true", help="the test suite's tiny CLIP (16 px): a CPU smoke run")
    p.add_argument("--source-sizes", type=int, nargs="+", default=None,
                   help="pixel sizes of the uint8 images fed in (default: the model's size and 512; tiny: 16 and 37)")
    p.add_argument("--images", type=int, default=None, help="images per timed pass (default: 2048; tiny: 512)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="timed passes per row; the best is reported")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    a = p.parse_args(argv)
    if not (a.tiny or a.random_weights):
        p.error("pass --random-weights (ViT-B/16 shapes) or --tiny")
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse_args(argv)
    dev = device()
    with tempfile.TemporaryDirectory(prefix="clip_encoding_") as tmp:
        spec = {"path": str(tiny_clip(Path(tmp)))} if a.tiny else {"model": a.model, "tag": None}
        base = load_clip(spec, precision="fp32")
    base.model.to(dev)
    sizes = a.source_sizes or ([base.image_size, round(base.image_size * 512 / 224)] if a.tiny else [base.image_size, 512])
    n = a.images or (512 if a.tiny else 2048)
    rng = np.random.default_rng(0)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    print(f"device: {name}; {'tiny' if a.tiny else a.model} (random weights), {base.image_size} px input; "
          f"{n} images, batch {a.batch_size}, best of {a.repeats}")
    results = []
    for size in sizes:
        images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        reference, old_rate = None, None
        for mode, bundle in bundles(base).items():
            if mode not in a.modes:
                continue
            rate, feats = time_mode(mode, bundle, images, a.batch_size, a.repeats)
            reference = feats if mode == "fp32" else reference
            old_rate = rate if mode == "old" else old_rate
            results.append({"mode": mode, "source_size": size, "images_per_s": rate, "features": feats})
        for r in results[-len(a.modes):]:
            r["speedup_vs_old"] = r["images_per_s"] / old_rate if old_rate else None
            r["min_cosine_vs_fp32"] = min_cosine(r.pop("features"), reference) if reference is not None else None
            print(f"  {size:4d} px  {r['mode']:14s} {r['images_per_s']:9.1f} images/s"
                  + (f"  x{r['speedup_vs_old']:.2f} vs old" if r["speedup_vs_old"] else "")
                  + (f"  min cosine to fp32 {r['min_cosine_vs_fp32']:.5f}" if r["min_cosine_vs_fp32"] is not None else ""))
    return {"device": name, "image_size": base.image_size, "images": n, "batch_size": a.batch_size, "results": results}


if __name__ == "__main__":
    main()
