"""GPU hours of the paper suite's counterfactual stage, from a measured per-image cost.

    python benchmarks/paper_gpu_hours.py --checkpoint stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --cache-dir CACHE --clip-model ViT-B-16-quickgelu --clip-tag openai --clip-cache-dir CACHE

Run it on one GPU node of the cluster: it loads the latent diffusion model and CLIP named
in ``config.paper.yaml`` (or on the command line), times ``generate()`` - the very function a
``counterfactual_shard`` job runs: VAE encoding, DDIM inversion, guided regeneration, the
s = 1 reconstruction, decoding and the CLIP check - on random images in batches of
``counterfactual.batch_size``, and multiplies the measured seconds per image by the number
of counterfactuals the suite generates (one per few-shot image of a base class: 16 shots x
1098 base classes x 3 seeds).  The first batch is a warm-up and is not timed.

The class counts are those of CoOp's splits (base = the first ceil(n/2) labels).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dicap.backbones.clip import load_clip  # noqa: E402
from dicap.backbones.guides import CLIP_GRAD_BATCH_SIZE, make_guide  # noqa: E402
from dicap.backbones.latent_diffusion import load_latent_diffusion  # noqa: E402
from dicap.config import load_config  # noqa: E402
from dicap.counterfactual import generate  # noqa: E402
from dicap.runtime import device  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"imagenet": 1000, "caltech101": 100, "oxford_pets": 37, "stanford_cars": 196, "oxford_flowers": 102,
           "food101": 101, "fgvc_aircraft": 100, "sun397": 397, "dtd": 47, "eurosat": 10, "ucf101": 101}


class RandomImages:
    """Stands in for a dataset store: the cost does not depend on what the pixels show."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.rng = size, np.random.default_rng(seed)

    def pixels(self, rows: pd.DataFrame) -> np.ndarray:
        return self.rng.integers(0, 256, (len(rows), self.size, self.size, 3), dtype=np.uint8)


def counterfactuals_per_seed(shots: int) -> dict[str, int]:
    return {name: shots * math.ceil(n / 2) for name, n in CLASSES.items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    paper = load_config(ROOT / "config.paper.yaml")  # with the schema's defaults: the suite's whole config
    pre = paper["diffusion"]["pretrained"]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=pre["path"])
    p.add_argument("--cache-dir", default=pre.get("cache_dir"))
    p.add_argument("--dtype", default=pre["dtype"])
    p.add_argument("--image-size", type=int, default=pre["image_size"])
    p.add_argument("--clip-model", default=paper["clip"]["pretrained"]["model"])
    p.add_argument("--clip-tag", default=paper["clip"]["pretrained"]["tag"])
    p.add_argument("--clip-cache-dir", default=paper["clip"]["pretrained"].get("cache_dir"))
    p.add_argument("--batches", type=int, default=3, help="timed batches after one warm-up batch")
    a = p.parse_args(argv)
    params = paper["counterfactual"]
    dev = device()
    names = [f"class {i}" for i in range(10)]
    diffusion = load_latent_diffusion(a.checkpoint, names, pre["template"], dtype=a.dtype if dev.type == "cuda" else "float32",
                                      device=dev, image_size=a.image_size, cache_dir=a.cache_dir)
    clip = load_clip({"model": a.clip_model, "tag": a.clip_tag or None, "cache_dir": a.clip_cache_dir})
    clip.model.to(dev)
    text = clip.encode_texts([paper["clip"]["template"].format(n) for n in names])
    guide = make_guide(params["guide"], diffusion, None, clip=clip, text_features=text, grad_batch_size=CLIP_GRAD_BATCH_SIZE)
    store, bs = RandomImages(a.image_size), params["batch_size"]
    seconds = []
    for batch in range(a.batches + 1):
        rows = pd.DataFrame({"row": range(bs), "split": "train", "index": range(bs), "label": [i % 5 for i in range(bs)]})
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        generate.generate(store, rows, np.array([5 + i % 5 for i in range(bs)]), diffusion, guide, params)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if batch:  # the first batch warms up kernels and caches
            seconds.append((time.perf_counter() - start) / bs)
    per_image = float(np.median(seconds))
    per_seed = counterfactuals_per_seed(paper["data"]["shots"])
    unit = "GPU h" if dev.type == "cuda" else "h here"  # a CPU number says nothing about a GPU
    total = sum(per_seed.values()) * len(paper["seeds"])
    print(f"device: {torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}; steps {params['steps']}, "
          f"depth {params['inversion_depth']}, batch {bs}, guide {params['guide']}, {a.image_size} px")
    print(f"measured: {per_image:.3f} s per counterfactual (median of {len(seconds)} batches)")
    for name, n in per_seed.items():
        print(f"  {name:15s} {n * len(paper['seeds']):6d} counterfactuals  {n * len(paper['seeds']) * per_image / 3600:7.2f} {unit}")
    print(f"counterfactual stage: {total} counterfactuals, {total * per_image / 3600:.1f} {unit}")
    return {"seconds_per_image": per_image, "counterfactuals": total, "gpu_hours": total * per_image / 3600}


if __name__ == "__main__":
    main()
