"""Process set-up shared by every job: offline hub, thread count, determinism."""

from __future__ import annotations

import ctypes
import os
import random

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub lookup offline retries for ~47 s

# glibc's mallopt parameters (malloc.h) and the values set by keep_freed_memory.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for it on 64-bit systems
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for the next allocation instead of returning it to the kernel.

    Scoring and training allocate and free tensors of a few MB every batch.  By default glibc
    serves those with fresh ``mmap`` pages and trims its heap after each free, so the kernel
    zero-fills the same pages again and again: an ``evaluate`` job spent 8 of its 33 s in the
    kernel (1.9 s with these settings, 24 s in all).  Numerics are untouched.  Returns whether
    the settings took (False off glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


keep_freed_memory()  # every dicap process: the jobs, and the warm worker their children fork from


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
