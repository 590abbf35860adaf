"""The evaluation stage's job (rules/evaluate.smk): the function is the rule of the same name."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

__all__ = ["evaluate", "evaluate_task"]

TEXT_TASK_SPLIT = "test_unbiased"  # the embedded suite's unbiased test split; a paper dataset has one test split


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
    from dicap.evaluation.prompts import score_prompts
    from dicap.guards import check_finite, check_table_finite
    from dicap.io import load_arrays, write_table

    _check_prompts(methods, prompts, params)
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


def _check_prompts(methods: list[str], prompts: list[Path], params: dict[str, Any]) -> None:
    """One prompt file and one parameter set per method, named before any model loads."""
    if len(methods) != len(prompts):
        raise ValueError(f"{len(methods)} methods but {len(prompts)} prompt files")
    if missing := [m for m in methods if m not in params]:
        raise ValueError(f"--params has no parameters for method(s) {', '.join(missing)}")


def evaluate_task(
    dataset_dir: Path,
    clip_dir: Path,
    features: Annotated[Path, "encode_eval_features' cache"],
    task: Annotated[str, "retrieval or vqa"],
    prompts: Annotated[list[Path], "one learned context per method, in --methods' order"],
    methods: list[str],
    seed: int,
    params: Annotated[dict[str, dict[str, Any]], "each method's parameters (prompting.methods.method_params)"],
    recall_at: Annotated[list[int], "retrieval: the K of R@K"],
    out: Path,
    vqa_answers: Annotated[int, "a paper VQA dataset: candidate answers per answer type (tasks.vqa_answers)"] = 20,
    threads: int = 1,
) -> None:
    """Score every method's context on a text task over the test split (the embedded suite's
    unbiased one): retrieval R@K both ways, or VQA accuracy per question type; on the
    embedded suite also per base and novel images."""
    from dicap import runtime
    from dicap.backbones.clip import load_clip
    from dicap.data import text_store, text_tasks
    from dicap.data.store import DatasetStore
    from dicap.evaluation.text_scoring import score_text_task
    from dicap.guards import check_finite, check_table_finite
    from dicap.io import load_arrays, write_table
    from dicap.prompting.methods import check_text_task_method

    text_tasks.check_task(task)
    for method in methods:
        check_text_task_method(method)
    _check_prompts(methods, prompts, params)
    runtime.setup(threads, seed)
    store = DatasetStore.open(dataset_dir)
    if store.is_text_task and store.task != task:
        raise ValueError(f"{dataset_dir} is a {store.task} dataset, not a {task} one")
    split = TEXT_TASK_SPLIT if TEXT_TASK_SPLIT in store.test_splits else store.test_splits[0]
    cached = load_arrays(features)
    check_finite(out, cached, source=features)
    rows = store.split(split)
    if store.is_text_task:
        examples = text_store.evaluation_examples(store, rows, vqa_answers)
    else:
        examples = text_tasks.evaluation_examples(task, store.dataset, rows)
    bundle = load_clip({"path": str(clip_dir)})
    bundle.model.to(runtime.device())
    table = score_text_task(bundle, store, cached[split], rows["label"].to_numpy(), examples, dict(zip(methods, prompts)),
                            params, seed, recall_at, out).assign(split=split)
    check_table_finite(out, table)
    write_table(out, table)
