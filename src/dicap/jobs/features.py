"""Jobs of rules/features.smk: frozen-encoder feature caches.

Each function is the rule of the same name.  The encoders are frozen, so image features are
computed once here and prompt training reads these caches instead of re-encoding an image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

__all__ = ["encode_train_features", "encode_eval_features"]


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
    from dicap.counterfactual.training_set import training_set

    runtime.setup(threads, 0)
    store = DatasetStore.open(dataset_dir)
    bundle = load_clip({"path": str(clip_dir)})
    bundle.model.to(runtime.device())
    found = training_set(split, variant, counterfactual_images, counterfactual_table)
    out_arrays = {**found, "train": bundle.encode_rows(store, found["train"])}
    if "cf" in found:
        out_arrays["cf"] = bundle.encode_images(found["cf"]).numpy()
    check_finite(out, out_arrays)
    save_arrays(out, out_arrays)


def encode_eval_features(dataset_dir: Path, clip_dir: Path, out: Path, threads: int = 1) -> None:
    """Cache frozen CLIP features of the validation and test splits."""
    from dicap.data.store import DatasetStore
    from dicap.evaluation.features import encode_splits

    store = DatasetStore.open(dataset_dir)
    # a retrieval or VQA store has a pool and a test split only
    encode_splits(store, clip_dir, [*([] if store.is_text_task else ["val"]), *store.test_splits], out, threads)
