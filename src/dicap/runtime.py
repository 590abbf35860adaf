"""Process set-up shared by every job: offline hub, CPU kernels, thread count, determinism, log levels."""

from __future__ import annotations

import ctypes
import logging
import os
import random
from collections.abc import Mapping

from dicap import cpu

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub lookup offline retries for ~47 s
try:  # before torch loads, in every dicap process: the same numbers on any x86 CPU with AVX2 (dicap.cpu)
    cpu.pin_kernels(os.environ)
except ValueError as err:
    raise SystemExit(f"dicap: {err}") from None

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


LOG_LEVEL_ENV = "DICAP_LOG_LEVEL"  # e.g. INFO: the libraries' INFO lines too; WARNING: dicap's progress off
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure_logging(env: Mapping[str, str] = os.environ) -> None:
    """dicap's own progress lines at INFO, every library's below WARNING silenced.

    open_clip logs a dozen INFO lines per model load on the *root* logger ("Parsing model
    identifier", "Instantiating model architecture", ...), which drowned a job's loss and
    accuracy lines; so the root logger (and through it every library logger left at its
    default) stays at WARNING while the ``dicap`` logger speaks at INFO.  ``DICAP_LOG_LEVEL``
    sets both to one level: ``INFO`` brings the libraries back, ``DEBUG`` adds dicap's own
    debug lines, ``WARNING`` leaves warnings only.  Only levels change, never a handler or a
    format (cli.run's), and logs are no output: the result files are the same at any level.
    """
    value = env.get(LOG_LEVEL_ENV, "").strip().upper()
    if value and value not in LOG_LEVELS:
        raise ValueError(f"{LOG_LEVEL_ENV}={env[LOG_LEVEL_ENV]!r}: must be one of {', '.join(LOG_LEVELS)} (or unset)")
    level = logging.getLevelName(value) if value else None
    logging.getLogger().setLevel(level or logging.WARNING)
    logging.getLogger("dicap").setLevel(level or logging.INFO)


def setup(threads: int, seed: int) -> None:
    """Pin threads to Snakemake's ``threads``, seed every generator for CPU determinism, and set
    the log levels (:func:`configure_logging`) before any model loads."""
    import numpy as np  # here, not above: `dicap` imports this module, and hands most jobs on before numpy loads
    import torch

    configure_logging()

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
