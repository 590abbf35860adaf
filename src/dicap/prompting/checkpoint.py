"""Resumable prompt training: the loop's whole state, saved every few epochs beside the output.

A job stopped part-way (a cluster time limit, pre-emption, Ctrl-C) reruns from its last
checkpoint instead of from epoch 0.  The checkpoint holds everything the next epoch depends
on - the learner's tensors, SGD's momentum buffers, the scheduler's position, the state of the generator
that draws the batch order, and the history so far - so a resumed run ends with the same
bytes as an uninterrupted one on the same device.

A checkpoint is used only when its fingerprint matches the run (training parameters, method,
seed, logit scale, the learner's initial tensors and every feature tensor): one written for other inputs,
say before a config change or a regenerated feature cache, is ignored with a log line rather
than silently continued.  The checkpoint interval is deliberately not part of it: it does not
change the result.  Files are safetensors (no pickle), written through
:func:`dicap.io.atomic_output`, so a job killed while saving leaves the previous checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dicap.io import load_arrays, save_arrays

log = logging.getLogger(__name__)

FORMAT = "dicap-prompt-checkpoint/2"  # /2: every trainable tensor by name (/1 held CoOp's ctx only)
TENSOR, MOMENTUM = "tensor/", "momentum/"  # array-name prefixes


@dataclass
class TrainingState:
    """Everything the next epoch depends on, after ``epoch`` completed epochs."""

    epoch: int
    tensors: dict[str, torch.Tensor]  # the learner's trainable tensors by name
    momentum: dict[str, torch.Tensor]  # SGD's buffers by the same names; empty only before the first step
    scheduler_steps: int
    generator_state: torch.Tensor  # uint8, from torch.Generator.get_state()
    history: list[dict[str, float]]

    @classmethod
    def capture(
        cls,
        epoch: int,
        tensors: dict[str, torch.Tensor],
        opt: torch.optim.Optimizer,
        scheduler_steps: int,
        generator: torch.Generator,
        history: list[dict[str, float]],
    ) -> TrainingState:
        """Copy the live training objects' state (CPU copies, so a GPU run's checkpoint loads anywhere)."""
        momentum = {name: opt.state[p]["momentum_buffer"] for name, p in tensors.items()
                    if opt.state.get(p, {}).get("momentum_buffer") is not None}
        return cls(
            epoch=epoch,
            tensors={name: p.detach().cpu().clone() for name, p in tensors.items()},
            momentum={name: m.detach().cpu().clone() for name, m in momentum.items()},
            scheduler_steps=scheduler_steps,
            generator_state=generator.get_state(),
            history=[dict(h) for h in history],
        )

    def restore(self, tensors: dict[str, torch.Tensor], opt: torch.optim.Optimizer, generator: torch.Generator) -> None:
        """Put the tensors, momentum buffers and generator back; the caller offsets the scheduler."""
        if set(self.tensors) != set(tensors):
            raise ValueError(f"checkpoint holds {sorted(self.tensors)}, expected {sorted(tensors)}")
        for name, p in tensors.items():
            if tuple(self.tensors[name].shape) != tuple(p.shape):
                raise ValueError(f"checkpoint {name!r} has shape {tuple(self.tensors[name].shape)}, expected {tuple(p.shape)}")
            with torch.no_grad():
                p.copy_(self.tensors[name])
            if name in self.momentum:
                opt.state[p]["momentum_buffer"] = self.momentum[name].to(device=p.device, dtype=p.dtype).clone()
        generator.set_state(self.generator_state)


def checkpoint_path(out: str | Path) -> Path:
    """``<dir>/seed1.safetensors`` -> ``<dir>/seed1.checkpoint.safetensors``, beside the output."""
    out = Path(out)
    return out.with_name(f"{out.stem}.checkpoint.safetensors")


def fingerprint(
    method: str,
    seed: int,
    params: Mapping[str, Any],
    logit_scale: float,
    initial: Mapping[str, torch.Tensor],
    features: Mapping[str, torch.Tensor],
) -> str:
    """sha256 of everything a run's result depends on, so a checkpoint of another run is never resumed.

    The feature tensors are hashed rather than the cache file, so the check also holds for a
    caller that builds features in memory; the learner's initial tensors stand in for the CLIP
    model and ``ctx_init`` they were built from.
    """
    digest = hashlib.sha256()
    head = {"method": method, "seed": seed, "params": params, "logit_scale": repr(float(logit_scale))}
    digest.update(json.dumps(head, sort_keys=True, default=str).encode())
    tensors = {**{f"<initial {name}>": t for name, t in initial.items()}, **features}
    for name, tensor in sorted(tensors.items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"\n{name}:{data.dtype}:{tuple(data.shape)}\n".encode())
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | Path, state: TrainingState, key: str) -> None:
    """Write ``state`` atomically: tensors as safetensors arrays, counters and history as metadata."""
    arrays = {"generator_state": state.generator_state.numpy()}
    arrays |= {f"{TENSOR}{name}": t.numpy() for name, t in state.tensors.items()}
    arrays |= {f"{MOMENTUM}{name}": t.numpy() for name, t in state.momentum.items()}
    meta = {
        "format": FORMAT,
        "fingerprint": key,
        "epoch": str(state.epoch),
        "scheduler_steps": str(state.scheduler_steps),
        "history": json.dumps(state.history),
    }
    save_arrays(path, arrays, meta)


def load_checkpoint(path: str | Path, key: str) -> TrainingState | None:
    """The state saved at ``path``, or None (with a log line) when it is absent, unreadable or of another run."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        arrays = load_arrays(path)
        meta = _metadata(path)
    except ValueError as err:
        log.warning("ignoring checkpoint: %s; starting from epoch 0", err)  # err names the path
        return None
    if meta.get("format") != FORMAT or meta.get("fingerprint") != key:
        log.warning(
            "ignoring checkpoint %s: it was written for different inputs (training params, method, seed or "
            "features); starting from epoch 0", path,
        )
        return None
    try:
        return TrainingState(
            epoch=int(meta["epoch"]),
            tensors=_prefixed(arrays, TENSOR),
            momentum=_prefixed(arrays, MOMENTUM),
            scheduler_steps=int(meta["scheduler_steps"]),
            generator_state=torch.from_numpy(arrays["generator_state"].astype(np.uint8)),
            history=json.loads(meta["history"]),
        )
    except (KeyError, ValueError) as err:
        log.warning("ignoring checkpoint %s: incomplete (%s); starting from epoch 0", path, err)
        return None


def remove_checkpoint(path: str | Path) -> None:
    """Delete a finished run's checkpoint; called only once the final output is written."""
    Path(path).unlink(missing_ok=True)


def _prefixed(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith(prefix)}


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            return dict(handle.metadata() or {})
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
