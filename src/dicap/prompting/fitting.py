"""Train a learner and save what it learned, resuming an interrupted run from its checkpoint.

Shared by classification (``train_prompt``) and the text tasks (``train_task_prompt``): both
write the same tensors-plus-history pair, with the learner's name and the provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dicap.guards import check_finite
from dicap.io import provenance, save_arrays, write_json
from dicap.prompting.checkpoint import checkpoint_path, remove_checkpoint
from dicap.prompting.methods import Method
from dicap.prompting.trainer import train_context


def fit_and_save(learner, method: Method, cached: dict[str, Any], params: dict[str, Any], logit_scale: float, seed: int,
                 out: Path, checkpoint_every: int = 0, meta: dict[str, str] | None = None) -> None:
    """Train ``learner`` (resuming a matching checkpoint beside ``out``), then save its tensors and history."""
    checkpoint = checkpoint_path(out)
    history = train_context(learner, method, cached, params, logit_scale, seed,
                            checkpoint=checkpoint, checkpoint_every=checkpoint_every)
    state = {name: t.detach().cpu().numpy() for name, t in learner.trainable_state().items()}
    check_finite(out, state)
    save_arrays(out, state, meta={"method": method.name, "learner": method.learner, "seed": str(seed), **(meta or {})})
    write_json(out.with_suffix(".json"), {"method": method.name, "learner": method.learner, "history": history,
                                          **(meta or {}), **provenance(params, seed)})
    remove_checkpoint(checkpoint)  # only now: a job killed before this line resumes instead of retraining
