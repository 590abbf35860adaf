"""Jobs of rules/prompts.smk: one prompt-training job per dataset, variant, method and seed.

Each function is the rule of the same name; ``epochs`` is an argparse type, not a job.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any

__all__ = ["train_prompt"]


def epochs(text: str) -> int:
    """argparse type: a whole number of epochs, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of epochs, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more epochs, got {value}")
    return value


def train_prompt(
    dataset_dir: Path,
    clip_dir: Path,
    features: Annotated[Path, "encode_train_features' cache"],
    method: str,
    seed: int,
    params: Annotated[dict[str, Any], "the method's parameters (prompting.methods.method_params)"],
    out: Annotated[Path, "the learned tensors; the history is written beside them (.json)"],
    split: Annotated[Path | None, "the few-shot split: read only by a learner that encodes images itself"] = None,
    variant: Annotated[str, "the variant trained: which classes the learner learns (all_classes: every one)"] = "main",
    counterfactual_images: Path | None = None,
    counterfactual_table: Path | None = None,
    checkpoint_every: Annotated[int, epochs, "save a resumable checkpoint beside --out every EPOCHS epochs (0: never); "
                                "a matching one is always resumed"] = 0,
    threads: int = 1,
) -> None:
    """Learn one method's prompt on cached features, or on the images for MaPLe.

    The checkpoint interval is an option, not part of ``params``: it cannot change the
    result, so changing it must neither rerun the job nor alter the recorded provenance.
    """
    import torch

    from dicap import runtime
    from dicap.backbones.clip import load_clip
    from dicap.data.splits import trained_classes
    from dicap.data.store import DatasetStore
    from dicap.io import load_arrays
    from dicap.prompting.fitting import fit_and_save
    from dicap.prompting.methods import build_learner, parse_method
    from dicap.counterfactual.training_set import training_set

    spec = parse_method(method)
    runtime.setup(threads, seed)
    store = DatasetStore.open(dataset_dir)
    bundle = load_clip({"path": str(clip_dir)})
    dev = runtime.device()
    classes = trained_classes(store, variant)
    learner = build_learner(spec, bundle.model, bundle.tokenizer, [store.classes[c] for c in classes],
                            params, preprocess=bundle.pixels_to_input)
    learner.to(dev)
    if learner.uses_pixels:
        if split is None:
            raise ValueError(f"{method} encodes the images itself: give --split (and the counterfactuals, if any)")
        inputs = training_set(split, variant, counterfactual_images, counterfactual_table)
        inputs["train"] = store.pixels(inputs["train"])
    else:
        inputs = load_arrays(features)
    _check_labels(inputs, classes, variant, split if learner.uses_pixels else features)
    cached = {k: torch.from_numpy(v).to(dev) for k, v in inputs.items()}
    fit_and_save(learner, spec, cached, params, float(bundle.model.logit_scale.exp()), seed, out, checkpoint_every)


def _check_labels(inputs: dict[str, Any], classes: list[int], variant: str, source: Path) -> None:
    """Refuse shots or counterfactual targets of a class the learner was not built with: a
    split of every class given to a learner of the base half means the variant was not passed
    on, and would fail deep inside the loss."""
    import numpy as np

    labels = np.unique(np.concatenate([np.asarray(inputs[k]).ravel() for k in ("train_labels", "cf_labels") if k in inputs]))
    outside = sorted(set(labels.tolist()) - set(classes))
    if outside:
        raise ValueError(f"{source}: labels {outside[:5]} are not among the {len(classes)} classes variant {variant!r} "
                         "trains on: give --variant the variant that drew this split")
