"""Process set-up shared by every job: offline hub, thread count, determinism."""

from __future__ import annotations

import os
import random

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub lookup offline retries for ~47 s


def setup(threads: int, seed: int) -> None:
    """Pin threads to Snakemake's ``threads`` and seed every generator for CPU determinism."""
    import torch

    torch.set_num_threads(max(1, threads))
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True, warn_only=True)


def optimizer_step(opt: "torch.optim.Optimizer", loss: "torch.Tensor", schedule=None) -> float:  # noqa: F821
    """One plain training step shared by every trainer; returns the loss as a float."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if schedule is not None:
        schedule.step()
    return loss.item()


def device() -> "torch.device":  # noqa: F821 - torch imported lazily
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
