"""Plain helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

# The smallest rendered dataset the jobs accept: one pool of 3 images per class.
SIZES = {"image_size": 16, "pretrain_per_class": 2, "pool_per_class": 3, "val_per_class": 1, "test_per_class": 1}

# Prompt learning on conftest's tiny ``clip_model``.
CONTEXT = 16
NAMES = ["circle", "square", "triangle"]
PARAMS = {
    "epochs": 15, "batch_size": 8, "lr": 0.5, "weight_decay": 0.0,
    "cf_weight": 1.0, "cf_temperature": 0.07, "cf_positive_weight": 0.0,
}


def tokenize(texts):
    import open_clip

    return open_clip.tokenize(texts, context_length=CONTEXT)


def prompt_features(n_per_class: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Well separated synthetic image features: one random direction per class, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(len(NAMES), 32, generator=gen), dim=-1)
    labels = torch.arange(len(NAMES)).repeat_interleave(n_per_class)
    x = F.normalize(centres[labels] + 0.1 * torch.randn(len(labels), 32, generator=gen), dim=-1)
    y_cf = (labels + 1) % len(NAMES)
    x_cf = F.normalize(centres[y_cf] + 0.1 * torch.randn(len(labels), 32, generator=gen), dim=-1)
    return {"train": x, "train_labels": labels, "cf": x_cf, "cf_labels": y_cf}


def with_key(config: dict, dotted: str, value) -> dict:
    """A copy of ``config`` with the key ``a.b.c`` set to ``value``."""
    out = copy.deepcopy(config)
    *parents, last = dotted.split(".")
    node = out
    for p in parents:
        node = node[p]
    node[last] = value
    return out
