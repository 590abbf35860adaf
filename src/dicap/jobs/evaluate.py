"""Jobs of rules/evaluate.smk: every method's prompt scored on base and novel classes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

__all__ = ["evaluate"]


def evaluate(
    dataset_dir: Path,
    clip_dir: Path,
    features: Annotated[Path, "encode_eval_features' cache"],
    prompts: Annotated[list[Path], "one learned context per method, in --methods' order"],
    methods: list[str],
    seed: int,
    params: Annotated[dict[str, dict[str, Any]], "each method's parameters (prompting.methods.method_params)"],
    out: Path,
    threads: int = 1,
) -> None:
    """Score every method's prompt on base and novel classes of every test split (the
    embedded suite's background grid as the seed's aligned and conflict rows)."""
    from dicap import runtime
    from dicap.backbones.clip import load_clip
    from dicap.data.store import ARRAYS, DatasetStore
    from dicap.evaluation.prompts import check_prompt_files, score_prompts
    from dicap.guards import check_finite, check_table_finite
    from dicap.io import load_arrays, write_table

    check_prompt_files(methods, prompts, params)
    runtime.setup(threads, seed)
    store = DatasetStore.open(dataset_dir)
    bundle = load_clip({"path": str(clip_dir)})
    cached = load_arrays(features)
    check_finite(out, cached, source=features)
    pairing = store.pairing(seed) if store.storage == ARRAYS else None  # rendered data: the seed's shortcut pairing
    bundle.model.to(runtime.device())
    table = score_prompts(bundle, store, cached, dict(zip(methods, prompts)), params, seed, out, pairing)
    check_table_finite(out, table)
    write_table(out, table)

