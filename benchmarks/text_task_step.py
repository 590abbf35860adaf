"""The text tasks' prompt training on the accelerator: CUDA against CPU, and the cost of a step.

    python benchmarks/text_task_step.py --random-weights    # ViT-B/16 shapes, paper VQA sizes (GPU)
    python benchmarks/text_task_step.py --tiny              # CPU smoke run (seconds)

1. **Agreement.** DiCap on KgCoOp trains on a VQA-shaped problem (each example scored among
   its own candidate statements, some examples without a counterfactual: ``cf_valid``) with the
   test suite's tiny CLIP, once on the CPU and once on the default device; the learned
   contexts and the loss histories are compared.  This is the path a CPU-only test cannot
   check: the per-batch text subset indexes device tensors with CPU batch indices.
2. **Every learner on the device** (``learners_on_device``): built around a frozen CLIP already
   on the device, as evaluation builds them, then scoring a few images; a learner whose
   tensors stayed on the CPU fails here and nowhere on a CPU-only machine.
3. **Cost.** Seconds per training step (forward, backward, SGD) for a batch of ``--batch``
   questions with ``--answers`` candidate statements each, the batch's subset encoded (what
   ``train_context`` does), against encoding all ``--texts`` texts every step (what it did
   before): at paper scale, 3 % of VQAv2 val is ~6,400 questions x 21 statements ~ 135k texts,
   which no step can encode, so the full path is timed at ``--texts`` and scales with it.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clip_encoding import tiny_clip  # noqa: E402
from dicap.backbones.clip import load_clip  # noqa: E402
from dicap.prompting.methods import build_learner, parse_method  # noqa: E402
from dicap.prompting.trainer import batch_losses, optimizer_step, train_context  # noqa: E402
from dicap.runtime import device  # noqa: E402
from random_weights import SD15_CLIP_MODEL  # noqa: E402

METHOD = "dicap_kgcoop"
PARAMS: dict[str, Any] = {"n_ctx": 4, "ctx_init": "a photo of a", "epochs": 2, "batch_size": 8, "lr": 0.002,
                          "weight_decay": 0.0005, "cf_weight": 1.0, "cf_temperature": 0.1, "kg_weight": 8.0,
                          "template": "a photo of a {}."}


def problem(n_questions: int, answers: int, dim: int, seed: int = 0) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Statements and cached features of a VQA-shaped training set: question ``q``'s candidates
    are its own ``answers`` statements, the right one first; every fourth has no counterfactual."""
    g = torch.Generator().manual_seed(seed)
    words = ["red", "blue", "green", "two", "three", "yes", "no", "dog", "cat", "table", "street", "white"]
    texts = [f"what is thing {q}? thing {q} is {words[(q + a) % len(words)]}." for q in range(n_questions) for a in range(answers)]
    candidates = torch.zeros(n_questions, len(texts), dtype=torch.bool)
    for q in range(n_questions):
        candidates[q, q * answers : (q + 1) * answers] = True
    feats = torch.nn.functional.normalize(torch.randn(2 * n_questions, dim, generator=g), dim=-1)
    return texts, {"train": feats[:n_questions], "cf": feats[n_questions:],
                   "train_labels": torch.arange(n_questions) * answers, "train_candidates": candidates,
                   "cf_labels": torch.zeros(n_questions, dtype=torch.long),
                   "cf_valid": torch.arange(n_questions) % 4 != 0}


def train_on(dev: torch.device, bundle, texts: list[str], features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list]:
    model = copy.deepcopy(bundle.model)  # built on the CPU, then moved, as train_task_prompt does
    learner = build_learner(METHOD, model, bundle.tokenizer, texts, PARAMS).to(dev)
    history = train_context(learner, METHOD, {k: v.to(dev) for k, v in features.items()}, PARAMS,
                            float(model.logit_scale.exp()), seed=1)
    return learner.ctx.detach().cpu(), history


def agreement(bundle, dev: torch.device) -> dict[str, float]:
    texts, features = problem(24, 6, bundle.model.text_projection.shape[1])
    ctx_cpu, hist_cpu = train_on(torch.device("cpu"), bundle, texts, features)
    ctx_dev, hist_dev = train_on(dev, bundle, texts, features)
    loss_gap = max(abs(a[k] - b[k]) for a, b in zip(hist_cpu, hist_dev) for k in a if k != "epoch")
    return {"max_context_difference": float((ctx_cpu - ctx_dev).abs().max()), "max_loss_difference": loss_gap,
            "context_scale": float(ctx_cpu.abs().max())}


def learners_on_device(bundle, dev: torch.device) -> dict[str, str]:
    """'ok' or the error, per learner: built as ``evaluation.prompts`` builds them, then scored."""
    from dicap.evaluation.prompts import all_similarities, model_device
    from dicap.prompting.methods import LEARNERS

    import numpy as np

    model = copy.deepcopy(bundle.model).to(dev)
    moved = type(bundle)(model, tokenizer=bundle.tokenizer, image_size=bundle.image_size, mean=bundle.mean, std=bundle.std)
    names = ["banded", "dotted", "striped", "zigzagged"]
    extra = {"maple": {"n_ctx": 2, "ctx_init": "a photo", "depth": 2}}
    rng = np.random.default_rng(0)
    out = {}
    for name in LEARNERS:
        try:
            learner = build_learner(name, model, bundle.tokenizer, names, PARAMS | extra.get(name, {}),
                                    preprocess=moved.pixels_to_input).to(model_device(moved))
            learner.eval()
            if learner.uses_pixels:
                inputs = rng.integers(0, 256, (3, bundle.image_size, bundle.image_size, 3), dtype=np.uint8)
            else:
                inputs = np.asarray(torch.nn.functional.normalize(torch.randn(3, model.text_projection.shape[1]), dim=-1))
            sims = all_similarities(learner, 3, lambda a, b: inputs[a:b])
            out[name] = "ok" if sims.shape == (3, len(names)) and bool(torch.isfinite(sims).all()) else f"bad {tuple(sims.shape)}"
        except Exception as err:  # noqa: BLE001 - a report of every learner, not the first failure
            out[name] = f"{type(err).__name__}: {err}"[:200]
    return out


def seconds_per_step(learner, features: dict[str, torch.Tensor], batch: int, steps: int, subset: bool) -> float:
    """Mean wall time of ``steps`` optimiser steps (after one warm-up), the GPU synchronised."""
    spec = parse_method(METHOD)
    learner.supports_subset = subset  # the instance's switch: False is the full-encoding path
    opt = torch.optim.SGD([learner.ctx], lr=PARAMS["lr"], momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)
    n = len(features["train"])
    times = []
    for step in range(steps + 1):
        idx = torch.randint(0, n, (batch,), generator=torch.Generator().manual_seed(step))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        terms = batch_losses(learner, spec, features["train"][idx], features["train_labels"][idx], features["cf"],
                             features["cf_labels"], idx, PARAMS, 100.0, features["train_candidates"][idx],
                             features["cf_valid"][idx])
        optimizer_step(opt, sum(w * v for w, v in terms.values()), sched)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / steps


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--random-weights", action="store_true", help=f"{SD15_CLIP_MODEL} with random weights for the cost")
    p.add_argument("--tiny", action="store_true", help="the tiny CLIP for both parts: a CPU smoke run")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--answers", type=int, default=21, help="candidate statements per question (vqa_answers + its own)")
    p.add_argument("--texts", type=int, default=4096, help="texts the full-encoding path encodes per step")
    p.add_argument("--steps", type=int, default=5)
    a = p.parse_args(argv)
    if not (a.tiny or a.random_weights):
        p.error("pass --random-weights (ViT-B/16 shapes) or --tiny")
    dev = device()
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    with tempfile.TemporaryDirectory(prefix="text_task_step_") as tmp:
        tiny = load_clip({"path": str(tiny_clip(Path(tmp)))}, precision="fp32")
        big = tiny if a.tiny else load_clip({"model": SD15_CLIP_MODEL, "tag": None}, precision="fp32")
    agree = agreement(tiny, dev)
    print(f"device: {name}; {METHOD}, tiny CLIP, CPU vs {dev.type}: context differs by at most "
          f"{agree['max_context_difference']:.2e} (context values up to {agree['context_scale']:.3f}), "
          f"losses by {agree['max_loss_difference']:.2e}")
    learners = learners_on_device(tiny, dev)
    print(f"every learner scored on {dev.type}: " + ", ".join(f"{k} {v}" for k, v in learners.items()))
    n_questions = max(a.batch, a.texts // a.answers)  # at least one batch of distinct questions
    texts, features = problem(n_questions, a.answers, big.model.text_projection.shape[1])
    features = {k: v.to(dev) for k, v in features.items()}
    learner = build_learner(METHOD, big.model, big.tokenizer, texts, PARAMS).to(dev)
    subset = seconds_per_step(learner, features, a.batch, a.steps, subset=True)
    full = seconds_per_step(learner, features, a.batch, a.steps, subset=False)
    per_text = full / len(texts)
    print(f"{'tiny' if a.tiny else SD15_CLIP_MODEL}: batch {a.batch} x {a.answers} candidates; "
          f"subset {subset:.4f} s/step ({a.batch * a.answers} texts), all {len(texts)} texts {full:.4f} s/step "
          f"(x{full / subset:.1f}); at 135k texts the full path would take ~{per_text * 135_000:.1f} s/step")
    return {"device": name, **agree, "learners": learners, "subset_s": subset, "full_s": full, "texts": len(texts)}


if __name__ == "__main__":
    main()
