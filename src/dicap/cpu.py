"""Which CPU a job runs on, and which float kernels torch may pick on it.

torch's CPU kernels are chosen by instruction set: ATen's vectorised ops by its CPU capability,
matrix products by MKL's code path, convolutions by oneDNN's ISA.  Two CPUs that choose
differently sum floats in another order, and training amplifies the last bits: unpinned, a
Zen 5 (AVX-512) trained the `shapes` CLIP to 0.610 zero-shot accuracy where a Zen 3 (AVX2)
reached 0.582, and 225 of the default run's 2138 numbers left their tolerance.  So every dicap
process holds torch to the AVX2 kernels on any x86 CPU that has AVX2 (:func:`pin_kernels`),
before torch loads: with them the Zen 5 trained that CLIP to the Zen 3's 0.582 (the whole run:
docs/reproduction.md).  This module imports nothing heavy: `dicap` reads it on every job.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
"""The instruction sets that choose torch's CPU kernels (oneDNN's and ATen's dispatch): two CPUs
that differ in them sum floats in another order, and training amplifies the last bits."""

KERNELS_ENV = "DICAP_CPU_KERNELS"  # avx2 (the default) or native: torch picks the CPU's best kernels
KERNEL_CHOICES = ("avx2", "native")
KERNEL_PINS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised ops (read once, at the first dispatch)
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # MKL's GEMM code path: no AVX-512 branch
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility: the same AVX2 branch on every CPU
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's convolutions and matmuls
}
"""The environment that holds torch to AVX2 kernels; each is read when its library first runs,
so it must be set before any torch op (runtime sets it when `dicap` starts)."""
PINNABLE = ("avx2", "fma")  # ATen trusts ATEN_CPU_CAPABILITY blindly: on a CPU without AVX2 it would crash


def _number(value: str | None) -> int | str | None:
    try:
        return int(value, 0) if value is not None else None  # "25" on x86, "0xd0c" (CPU part) on ARM
    except ValueError:
        return value


def cpu_from_cpuinfo(text: str) -> dict[str, Any]:
    """The first processor of a ``/proc/cpuinfo`` text: vendor, family, model number, model
    name and which of :data:`SIMD_FLAGS` it has (ARM's implementer, architecture and part stand in)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {
        "vendor": fields.get("vendor_id") or fields.get("CPU implementer"),
        "family": _number(fields.get("cpu family") or fields.get("CPU architecture")),
        "model": _number(fields.get("model") or fields.get("CPU part")),
        "model_name": fields.get("model name"),
        "simd": {flag: flag in flags for flag in SIMD_FLAGS} if flags else {},
    }


def cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """This machine's CPU from ``cpuinfo`` on Linux; elsewhere only the name ``platform`` gives."""
    try:
        found = cpu_from_cpuinfo(cpuinfo.read_text())
    except OSError:
        found = cpu_from_cpuinfo("")
    found["model_name"] = found["model_name"] or platform.processor() or platform.machine()
    return found


def pin_kernels(env: MutableMapping[str, str] = os.environ, info: dict[str, Any] | None = None) -> bool:
    """Hold torch to :data:`KERNEL_PINS` unless ``DICAP_CPU_KERNELS=native`` or the CPU lacks AVX2;
    returns whether the pins are in ``env``.  A variable the user set already is kept: the
    machine record (:func:`kernels`) says what was in effect."""
    choice = env.get(KERNELS_ENV, "").strip().lower() or KERNEL_CHOICES[0]
    if choice not in KERNEL_CHOICES:
        raise ValueError(f"{KERNELS_ENV}={env[KERNELS_ENV]!r}: must be one of {', '.join(KERNEL_CHOICES)} (or unset)")
    simd = (info if info is not None else cpu())["simd"]
    if choice == "native" or not all(simd.get(flag) for flag in PINNABLE):
        return False
    for name, value in KERNEL_PINS.items():
        env.setdefault(name, value)
    return True


def kernels(env: MutableMapping[str, str] = os.environ) -> dict[str, str | None]:
    """The kernel variables in effect, for the machine record: None where unset."""
    return {name: env.get(name) for name in KERNEL_PINS}


def pinned(record: dict[str, Any] | None) -> bool:
    """Whether a machine record shows torch held to exactly :data:`KERNEL_PINS`."""
    return (record or {}).get("kernels") == KERNEL_PINS
