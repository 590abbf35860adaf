"""Jobs of rules/tasks.smk: image-text retrieval and VQA (Tables 2 and 3).

Each function is the rule of the same name: a task prompt is trained, scored, and the
per-seed scores aggregated into the task's table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

__all__ = ["train_task_prompt", "evaluate_task", "task_table"]


TEXT_TASK_SPLIT = "test_unbiased"  # the embedded suite's unbiased test split; a paper dataset has one test split



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
    import torch

    from dicap import runtime
    from dicap.backbones.clip import load_clip
    from dicap.data import text_store, text_tasks
    from dicap.data.store import DatasetStore
    from dicap.io import load_arrays, read_table
    from dicap.prompting.fitting import fit_and_save
    from dicap.prompting.methods import build_learner, check_text_task_method

    text_tasks.check_task(task)
    spec = check_text_task_method(method)
    runtime.setup(threads, seed)
    store = DatasetStore.open(dataset_dir)
    if store.is_text_task and store.task != task:
        raise ValueError(f"{dataset_dir} is a {store.task} dataset, not a {task} one")
    rows = read_table(split)
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
    learner = build_learner(spec, bundle.model.to(dev), bundle.tokenizer, examples.texts, params).to(dev)
    fit_and_save(learner, spec, {k: torch.from_numpy(v).to(dev) for k, v in inputs.items()}, params,
                 float(bundle.model.logit_scale.exp()), seed, out, meta={"task": task})



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
    from dicap.evaluation.prompts import check_prompt_files
    from dicap.evaluation.text_scoring import score_text_task
    from dicap.guards import check_finite, check_table_finite
    from dicap.io import load_arrays, write_table
    from dicap.prompting.methods import check_text_task_method

    text_tasks.check_task(task)
    for method in methods:
        check_text_task_method(method)
    check_prompt_files(methods, prompts, params)
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



def task_table(
    task: Annotated[str, "retrieval (Table 2) or vqa (Table 3)"],
    suite: str,
    datasets: list[str],
    metrics: Annotated[list[Path], "evaluate_task's per-seed files of the task"],
    config_json: Annotated[dict[str, Any], "the whole config, for the provenance record"],
    out_csv: Path,
    out_md: Path,
) -> None:
    """Aggregate per-seed retrieval or VQA scores into Table 2 or 3 (mean and std over seeds)."""
    from dicap.data.text_tasks import check_task
    from dicap.report.text_tables import build_task_table, write_task_table

    write_task_table(check_task(task), build_task_table(task, suite, datasets, metrics), out_csv, out_md, config_json)

