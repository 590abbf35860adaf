"""The prompt stage's jobs (rules/prompts.smk): each function is the rule of the same name.

Frozen encoders mean image features are computed once and cached: prompt training reads
those caches and never re-encodes an image.  Heavy libraries are imported inside the
functions.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Annotated, Any

log = logging.getLogger(__name__)

__all__ = ["encode_train_features", "encode_eval_features", "train_prompt", "train_task_prompt"]


def _training_set(
    split: Path,
    variant: str,
    counterfactual_images: Path | None,
    counterfactual_table: Path | None,
) -> dict[str, Any]:
    """The few-shot rows and labels, and the variant's counterfactual images (uint8) and targets.

    Encoded once by :func:`encode_train_features`, or fed as images to a learner that runs
    the vision tower itself (MaPLe).
    """
    import pandas as pd

    from dicap import layout
    from dicap.counterfactual.shards import GENERATED, TRUE
    from dicap.io import load_arrays

    wanted = layout.parse_variant(variant).counterfactuals
    if (wanted == "none") != (counterfactual_images is None or counterfactual_table is None):
        raise ValueError(f"variant {variant!r} trains on {wanted!r} counterfactuals: give --counterfactual-images and "
                         "--counterfactual-table exactly when it trains on some")
    rows = pd.read_parquet(split)
    out = {"train": rows, "train_labels": rows["label"].to_numpy()}
    if wanted != "none":
        key = TRUE if wanted == "true" else GENERATED
        arrays = load_arrays(counterfactual_images)
        if key not in arrays:
            raise KeyError(f"{counterfactual_images} holds no {key!r} (it has: {', '.join(arrays)})")
        out["cf"] = arrays[key]
        table = pd.read_parquet(counterfactual_table)
        out["cf_labels"] = table["y_cf"].to_numpy()
        if "edited" in table:  # a text dataset: a text naming no object has no counterfactual
            out["cf_valid"] = table["edited"].to_numpy(dtype=bool)
    return out


def encode_train_features(
    dataset_dir: Path,
    clip_dir: Path,
    split: Annotated[Path, "the few-shot split"],
    variant: Annotated[str, "which counterfactuals to encode: the true ones for true_cf, none for unbiased_shots, "
                       "else the generated ones"],
    out: Path,
    counterfactual_images: Annotated[Path | None, "merged counterfactuals (main's, for the true_cf variant)"] = None,
    counterfactual_table: Path | None = None,
    threads: int = 1,
) -> None:
    """Cache frozen CLIP features of the few-shot images and of their counterfactuals."""
    from dicap import runtime
    from dicap.backbones.clip import load_clip
    from dicap.data.store import DatasetStore
    from dicap.guards import check_finite
    from dicap.io import save_arrays

    runtime.setup(threads, 0)
    store = DatasetStore.open(dataset_dir)
    bundle = load_clip({"path": str(clip_dir)})
    bundle.model.to(runtime.device())
    found = _training_set(split, variant, counterfactual_images, counterfactual_table)
    out_arrays = {**found, "train": bundle.encode_rows(store, found["train"])}
    if "cf" in found:
        out_arrays["cf"] = bundle.encode_images(found["cf"]).numpy()
    check_finite(out, out_arrays)
    save_arrays(out, out_arrays)


def encode_eval_features(dataset_dir: Path, clip_dir: Path, out: Path, threads: int = 1) -> None:
    """Cache frozen CLIP features of the validation and test splits."""
    import numpy as np

    from dicap import runtime
    from dicap.backbones.clip import load_clip
    from dicap.data.store import BACKGROUND_GRID, DatasetStore
    from dicap.guards import check_finite
    from dicap.io import save_arrays

    runtime.setup(threads, 0)
    store = DatasetStore.open(dataset_dir)
    bundle = load_clip({"path": str(clip_dir)})
    bundle.model.to(runtime.device())
    out_arrays: dict[str, np.ndarray] = {}
    for name in ("val", *store.test_splits):
        if store.is_text_task and name == "val":  # a retrieval or VQA store has a pool and a test split only
            continue
        rows = store.split(name)
        out_arrays[name] = bundle.encode_rows(store, rows)
        out_arrays[f"{name}_labels"] = rows["label"].to_numpy()
        if name == BACKGROUND_GRID:  # evaluation picks each seed's aligned and conflict rows by background
            out_arrays[f"{name}_bg"] = rows["bg"].to_numpy()
    check_finite(out, out_arrays)
    save_arrays(out, out_arrays)


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
    variant: str = "main",
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
    from dicap.data.store import DatasetStore
    from dicap.io import load_arrays
    from dicap.prompting.methods import build_learner

    runtime.setup(threads, seed)
    store = DatasetStore.open(dataset_dir)
    bundle = load_clip({"path": str(clip_dir)})
    dev = runtime.device()
    learner = build_learner(method, bundle.model, bundle.tokenizer, [store.classes[c] for c in store.base_classes],
                            params, preprocess=bundle.pixels_to_input)
    learner.to(dev)
    if learner.uses_pixels:
        if split is None:
            raise ValueError(f"{method} encodes the images itself: give --split (and the counterfactuals, if any)")
        inputs = _training_set(split, variant, counterfactual_images, counterfactual_table)
        inputs["train"] = store.pixels(inputs["train"])
    else:
        inputs = load_arrays(features)
    cached = {k: torch.from_numpy(v).to(dev) for k, v in inputs.items()}
    _fit_and_save(learner, method, cached, params, float(bundle.model.logit_scale.exp()), seed, out, checkpoint_every)


def _fit_and_save(learner, method: str, cached: dict[str, Any], params: dict[str, Any], logit_scale: float, seed: int,
                 out: Path, checkpoint_every: int = 0, meta: dict[str, str] | None = None) -> None:
    """Train ``learner`` (resuming a matching checkpoint beside ``out``), then save its tensors and history."""
    from dicap.guards import check_finite
    from dicap.io import provenance, save_arrays, write_json
    from dicap.prompting.checkpoint import checkpoint_path, remove_checkpoint
    from dicap.prompting.methods import parse_method
    from dicap.prompting.trainer import train_context

    checkpoint = checkpoint_path(out)
    history = train_context(learner, method, cached, params, logit_scale, seed,
                            checkpoint=checkpoint, checkpoint_every=checkpoint_every)
    state = {name: t.detach().cpu().numpy() for name, t in learner.trainable_state().items()}
    check_finite(out, state)
    learner_name = parse_method(method).learner
    save_arrays(out, state, meta={"method": method, "learner": learner_name, "seed": str(seed), **(meta or {})})
    write_json(out.with_suffix(".json"), {"method": method, "learner": learner_name, "history": history,
                                          **(meta or {}), **provenance(params, seed)})
    remove_checkpoint(checkpoint)  # only now: a job killed before this line resumes instead of retraining


def train_task_prompt(
    dataset_dir: Path,
    clip_dir: Path,
    features: Annotated[Path, "encode_train_features' cache of the main variant"],
    split: Annotated[Path, "the few-shot split those features encode, in the same order"],
    task: Annotated[str, "retrieval or vqa"],
    method: str,
    seed: int,
    params: Annotated[dict[str, Any], "the method's parameters (prompting.methods.method_params)"],
    out: Annotated[Path, "the learned tensors; the history is written beside them (.json)"],
    vqa_answers: Annotated[int, "a paper VQA dataset: candidate answers per answer type (tasks.vqa_answers)"] = 20,
    threads: int = 1,
) -> None:
    """Learn one method's context for a text task: the few-shot images' captions or questions.

    On the embedded suite the images, their counterfactuals and their features are
    classification's (main variant) and only the texts change (:mod:`dicap.data.text_tasks`);
    a paper retrieval or VQA dataset has its own split, one text per row
    (:mod:`dicap.data.text_store`).  Each counterfactual is the hard negative of its image's
    caption or statements: they name the object it changed.
    """
    import pandas as pd
    import torch

    from dicap import runtime
    from dicap.backbones.clip import load_clip
    from dicap.data import text_store, text_tasks
    from dicap.data.store import DatasetStore
    from dicap.io import load_arrays
    from dicap.prompting.methods import build_learner, check_text_task_method

    text_tasks.check_task(task)
    check_text_task_method(method)
    runtime.setup(threads, seed)
    store = DatasetStore.open(dataset_dir)
    if store.is_text_task and store.task != task:
        raise ValueError(f"{dataset_dir} is a {store.task} dataset, not a {task} one")
    rows = pd.read_parquet(split)
    cached = load_arrays(features)
    if len(cached["train"]) != len(rows):
        raise ValueError(f"{features} encodes {len(cached['train'])} images but {split} has {len(rows)} rows")
    if store.is_text_task:
        examples = text_store.training_examples(store, rows, vqa_answers)
    else:
        examples = text_tasks.training_examples(task, store.dataset, rows, seed)
    inputs = {"train": cached["train"][examples.image], "train_labels": examples.label}
    for key in ("cf", "cf_valid"):
        if key in cached:
            inputs[key] = cached[key][examples.image]
    if examples.candidates is not None:
        inputs["train_candidates"] = examples.candidates
    bundle = load_clip({"path": str(clip_dir)})
    dev = runtime.device()
    # on the device first: KgCoOp encodes every text's hand-written prompt once (~135k on VQAv2)
    learner = build_learner(method, bundle.model.to(dev), bundle.tokenizer, examples.texts, params).to(dev)
    _fit_and_save(learner, method, {k: torch.from_numpy(v).to(dev) for k, v in inputs.items()}, params,
                 float(bundle.model.logit_scale.exp()), seed, out, meta={"task": task})
