"""Scoring learned prompts: each method's learner rebuilt from its prompt file, then
base-to-novel accuracy on every test split of one dataset and seed.

Learners on cached features are scored on the cached evaluation features; a learner that
runs the vision tower itself (MaPLe) is scored on the split's images, read from the dataset
store a chunk at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dicap.data.scm import paired_masks
from dicap.data.store import BACKGROUND_GRID
from dicap.evaluation.metrics import base_novel
from dicap.guards import check_finite
from dicap.io import load_arrays
from dicap.prompting.learner import PromptLearner, cosine
from dicap.prompting.methods import build_learner

CHUNK = 256  # images scored at once
TEXTS_PER_CALL = 4096  # texts encoded at once by a learner whose text features are the same for every image
# A conditional learner encodes images x classes prompts per call.  On a GPU the cap keeps
# memory flat (ImageNet's 1000 classes: 4 images a call); on a CPU smaller calls stay in the
# caches: an embedded evaluate job took 21.0 s at 512 against 24.4 s at 4096, with the same scores.
PROMPTS_PER_CALL = 4096
CPU_PROMPTS_PER_CALL = 512


def load_prompt(learner: PromptLearner, prompt: Path, where: Path) -> None:
    """Put the tensors saved in ``prompt`` into ``learner``, refusing missing, misshapen or NaN ones.

    ``where`` is the output the caller is about to write: errors name it and the prompt file.
    """
    arrays = load_arrays(prompt)
    check_finite(where, arrays, source=prompt)
    learner.load_trainable_state(arrays, prompt)


def model_device(bundle: Any) -> torch.device:
    """Where the frozen CLIP is: a learner built around it goes there too (its own tensors
    start on the CPU)."""
    return next(bundle.model.parameters()).device


def text_features(learner: PromptLearner) -> torch.Tensor:
    """Every text's features, :data:`TEXTS_PER_CALL` at a time: a test split of 25,000 captions
    (MSCOCO) in one forward pass would hold ~16 GB of activations per layer."""
    n = len(learner.tokens)
    if n <= TEXTS_PER_CALL:
        return learner()
    parts = []
    for start in range(0, n, TEXTS_PER_CALL):
        with learner.subset(torch.arange(start, min(n, start + TEXTS_PER_CALL))):
            parts.append(learner())
    return torch.cat(parts)


def all_similarities(learner: PromptLearner, n: int, inputs: Callable[[int, int], np.ndarray]) -> torch.Tensor:
    """(n, C) similarities of ``n`` images, ``inputs(start, stop)`` giving each chunk's inputs.

    A conditional learner's chunk holds at most :data:`PROMPTS_PER_CALL` prompts, so its
    memory does not grow with the number of classes.
    """
    device = next(learner.parameters()).device
    cap = min(PROMPTS_PER_CALL, CPU_PROMPTS_PER_CALL) if device.type == "cpu" else PROMPTS_PER_CALL
    chunk = min(CHUNK, max(1, cap // len(learner.tokens))) if learner.conditional else CHUNK
    with torch.no_grad():
        if not learner.conditional and learner.supports_subset:  # one set of text features for every image
            text_f = text_features(learner)
            score = lambda x: cosine(learner.image_features(x), text_f)  # noqa: E731
        else:
            score = learner.similarities
        parts = [score(torch.from_numpy(inputs(i, min(n, i + chunk))).to(device)).cpu() for i in range(0, n, chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, len(learner.tokens))


def score_prompts(
    bundle: Any,
    store: Any,
    features: dict[str, np.ndarray],
    prompts: dict[str, Path],
    params: dict[str, dict[str, Any]],
    seed: int,
    where: Path,
    pairing: list[int] | None = None,
) -> pd.DataFrame:
    """One row per method and test split: base, novel and HM accuracy (and each half's worst class).

    ``bundle`` is a frozen :class:`~dicap.backbones.clip.ClipBundle`, ``store`` the dataset
    store, ``features`` the cached evaluation features, ``prompts`` each method's prompt file
    and ``params`` each method's parameters.  The background grid is scored as two splits,
    ``test_aligned`` and ``test_conflict``: its rows on each class's own ``pairing`` colour
    and on another class's of the same half.
    """
    base, novel = store.base_classes, store.novel_classes
    views: dict[str, tuple[str, np.ndarray]] = {}  # scored split -> (stored split, its rows)
    for split in store.test_splits:
        labels = features[f"{split}_labels"]
        if split == BACKGROUND_GRID:
            if pairing is None:
                raise ValueError(f"scoring {split} needs the seed's class-background pairing")
            masks = paired_masks(labels, features[f"{split}_bg"], pairing, [base, novel])
            for name, mask in zip(("test_aligned", "test_conflict"), masks):
                views[name] = (split, np.flatnonzero(mask))
        else:
            views[split] = (split, np.arange(len(labels)))
    # Only the rows some view scores are encoded: the background grid's aligned and conflict rows
    # are 5 of its 8 backgrounds, and a per-image learner's cost is per row.
    scored = {split: np.unique(np.concatenate([index for s, index in views.values() if s == split])) for split, _ in views.values()}
    rows = []
    for method, prompt in prompts.items():
        sims = method_similarities(bundle, store, features, method, prompt, params[method], list(scored), where, scored)
        for name, (split, index) in views.items():
            labels = torch.from_numpy(features[f"{split}_labels"][index])
            scores = base_novel(sims[split][torch.from_numpy(np.searchsorted(scored[split], index))], labels, base, novel)
            rows.append({"method": method, "seed": seed, "split": name, **scores})
    return pd.DataFrame(rows)


def method_similarities(bundle: Any, store: Any, features: dict[str, np.ndarray], method: str, prompt: Path,
                        params: dict[str, Any], splits: list[str], where: Path,
                        rows: dict[str, np.ndarray] | None = None) -> dict[str, torch.Tensor]:
    """Split -> (N, C) similarities of one method's learned prompt over ``store``'s classes,
    of every row of each split, or of the sorted ``rows[split]`` only (in that order).

    The learner is rebuilt on ``store``'s classes, whatever classes it learned on: a context
    is class-agnostic, so a prompt transfers to another class list (cross-dataset) unchanged.
    """
    learner = build_learner(method, bundle.model, bundle.tokenizer, store.classes, params,
                            preprocess=bundle.pixels_to_input).to(model_device(bundle))
    load_prompt(learner, prompt, where)
    learner.eval()
    sims = {}
    for split in splits:
        kept = rows[split] if rows is not None and split in rows else slice(None)
        if learner.uses_pixels:
            table = store.split(split).iloc[kept]
            sims[split] = all_similarities(learner, len(table), lambda a, b: store.pixels(table.iloc[a:b]))
        else:
            cached = features[split][kept]
            sims[split] = all_similarities(learner, len(cached), lambda a, b: cached[a:b])
        check_finite(where, {f"similarities of {method} on {split}": sims[split]})
    return sims


def score_transfer(
    bundle: Any,
    store: Any,
    features: dict[str, np.ndarray],
    prompts: dict[str, Path],
    params: dict[str, dict[str, Any]],
    seed: int,
    target: str,
    where: Path,
) -> pd.DataFrame:
    """One row per method and transfer split of a target store: accuracy (%) among all the
    target's classes, the cross-dataset and domain-generalization protocol (CoCoOp's).

    ``domain`` names the column the row reports in (``store.transfer_domain``): a dataset's
    test split is the target itself; the embedded shifted store's splits are its shifts.
    """
    splits = store.transfer_splits
    rows = []
    for method, prompt in prompts.items():
        sims = method_similarities(bundle, store, features, method, prompt, params[method], splits, where)
        for split in splits:
            labels = torch.from_numpy(features[f"{split}_labels"])
            rows.append({"method": method, "seed": seed, "target": target, "split": split,
                         "domain": store.transfer_domain(split, target),
                         "accuracy": 100 * float((sims[split].argmax(1) == labels).float().mean())})
    return pd.DataFrame(rows)


def open_scoring(dataset_dir: Path, clip_dir: Path, features: Path, methods: list[str], prompts: list[Path],
                 params: dict[str, Any], seed: int, threads: int, where: Path) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """(the frozen CLIP on its device, the store, its cached features) for a scoring job
    (evaluate, evaluate_transfer), the prompt files matched to their methods before any
    model loads and the features refused where one is not finite (``where``: the job's output)."""
    from dicap import runtime
    from dicap.backbones.clip import load_clip
    from dicap.data.store import DatasetStore

    check_prompt_files(methods, prompts, params)
    runtime.setup(threads, seed)
    store = DatasetStore.open(dataset_dir)
    bundle = load_clip({"path": str(clip_dir)})
    cached = load_arrays(features)
    check_finite(where, cached, source=features)
    bundle.model.to(runtime.device())
    return bundle, store, cached


def check_prompt_files(methods: list[str], prompts: list[Path], params: dict[str, Any]) -> None:
    """One prompt file and one parameter set per method, named before any model loads."""
    if len(methods) != len(prompts):
        raise ValueError(f"{len(methods)} methods but {len(prompts)} prompt files")
    if missing := [m for m in methods if m not in params]:
        raise ValueError(f"--params has no parameters for method(s) {', '.join(missing)}")
