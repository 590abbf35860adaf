"""The paper suite's retrieval and VQA datasets as stores, few-shot splits and text examples.

Flickr30k and MSCOCO (Karpathy splits) and VQAv2 have no classes: an image goes with
captions, or a question goes with its human answers.  They still use the classification
store's contract (:class:`dicap.data.store.DatasetStore`, storage ``files``), so the
counterfactual shards, feature caches and prompt training run unchanged on their rows:

* the table has one row per image (retrieval) or per question (VQA), ``split`` ``pool``
  (what few-shot training draws from) or ``test``, ``label`` -1 (no class), ``path``;
* ``classes.json`` says ``task`` (retrieval or vqa) and lists no classes;
* a retrieval store also writes ``texts.parquet``: the captions of the pool and test images.

CPL's protocol (:mod:`dicap.data.retrieval`, :mod:`dicap.data.vqa`): retrieval draws
``percent`` % of the Karpathy train images with one seeded caption each and tests on the
Karpathy test images with their first 5 captions; VQA tests on the last ``vqa_test_items``
questions (by question id) and draws ``percent`` % of all questions from the rest.

VQA candidates (CPL's code has none: its trained model scores all of the split's
statements).  Here each question is scored among the statements of an answer vocabulary of
its answer type (yes/no, number, other): the ``k`` most frequent answers of that type in the
pool, as closed-vocabulary VQA models take theirs from the training annotations.  A training
question whose own answer is outside the vocabulary gets it added (its cross-entropy needs
the right text); a test question does not, so it counts as wrong, as in closed-vocabulary
VQA.  The statement is CPL's (question + declarative, :mod:`dicap.data.statements`).

Each training row also carries ``prompt``: the text its image is inverted with and whose
edited copy regenerates it (:mod:`dicap.counterfactual.caption_edits`): the caption, or the
declarative sentence of the right answer (the question would be edited in its first
mention only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dicap.data import retrieval, statements, vqa
from dicap.data.store import recorded_image_root
from dicap.data.text_tasks import TextExamples, index_texts
from dicap.guards import contained
from dicap.io import write_json, write_table
from dicap.layout import STORE_CLASSES, STORE_TABLE, STORE_TEXTS

POOL, TEST = "pool", "test"
NO_LABEL = -1
VQA_KIND = "answer_type"  # VQA accuracy is reported per answer type (yes/no, number, other), as VQAv2's own tables


def build_text_store(entry: dict[str, Any], dataset_dir: str | Path, image_size: int, params: dict[str, Any],
                     out: str | Path) -> pd.DataFrame:
    """Write the store of a downloaded retrieval or VQA dataset (see the module docstring).

    Every annotation file and image must resolve inside the dataset folder, and every image
    must exist: a missing one stops this job naming it, not a GPU job hours later.
    """
    relative_root = recorded_image_root(dataset_dir, entry)  # before resolving: the name the data root gives it
    dataset_dir = Path(dataset_dir).resolve()
    key, task = entry.get("key") or dataset_dir.name, entry["task"]
    image_root = contained(dataset_dir, entry.get("image_root", "."), f"registry entry {key}: image_root")
    files = {role: contained(dataset_dir, rel, f"registry entry {key}: annotations.{role}")
             for role, rel in entry.get("annotations", {}).items()}
    texts = None
    if task == "retrieval":
        table, texts = _retrieval_tables(files["captions"])
    elif task == "vqa":
        table = _vqa_table(files["questions"], files["answers"], params["vqa_test_items"])
    else:
        raise ValueError(f"registry entry {key}: task {task!r} has no text store (expected retrieval or vqa)")
    missing = [p for p in dict.fromkeys(table["path"]) if not contained(image_root, p, f"image of {key}").is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images named by the annotations of {key} are missing under {image_root}, "
                                f"e.g. {missing[:3]}; re-download the dataset (delete its READY.json)")
    out = Path(out)
    write_table(out / STORE_TABLE, table)
    if texts is not None:
        write_table(out / STORE_TEXTS, texts)
    write_json(out / STORE_CLASSES, {"classes": [], "dataset": key, "storage": "files", "image_root": relative_root,
                                     "image_size": image_size, "task": task})
    return table


def _numbered(parts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The parts as one table with ``split``, ``index`` (within the split) and ``label`` first."""
    frames = [rows.reset_index(drop=True).assign(split=name, index=np.arange(len(rows)), label=NO_LABEL)
              for name, rows in parts.items()]
    table = pd.concat(frames, ignore_index=True)
    return table[["split", "index", "label", *[c for c in table.columns if c not in ("split", "index", "label")]]]


def _retrieval_tables(karpathy: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    images, captions = retrieval.read_karpathy(karpathy)
    test_images, test_captions = retrieval.retrieval_test(images, captions)
    pool = images[images["split"] == retrieval.FEW_SHOT_POOL].sort_values("image_id")
    table = _numbered({POOL: pool.drop(columns="split"), TEST: test_images.drop(columns="split")})
    texts = pd.concat([captions[captions["split"] == retrieval.FEW_SHOT_POOL].assign(split=POOL),
                       test_captions.assign(split=TEST)], ignore_index=True)
    return table, texts.sort_values(["split", "image_id", "caption_index"]).reset_index(drop=True)


def _vqa_table(questions: Path, answers: Path, n_test: int) -> pd.DataFrame:
    items = vqa.read_vqa(questions, answers).rename(columns={"image": "path"})
    if len(items) <= n_test:
        raise ValueError(f"{questions}: {len(items)} questions cannot give a test set of {n_test} and any training items")
    return _numbered({POOL: items.iloc[:-n_test], TEST: items.iloc[-n_test:]})


def few_shot_split(store: Any, percent: float, seed: int) -> pd.DataFrame:
    """The seed's few-shot training rows of a text store, with ``text`` (what the context is
    trained on) and ``prompt`` (what the diffusion model inverts and edits)."""
    pool = store.split(POOL)
    if store.task == "retrieval":
        images = pool.assign(split=retrieval.FEW_SHOT_POOL)
        captions = store.texts[store.texts["split"] == POOL].assign(split=retrieval.FEW_SHOT_POOL)
        drawn = retrieval.retrieval_training(images, captions, percent, seed)
        rows = pool.merge(drawn[["image_id", "caption_index", "caption"]], on="image_id", validate="1:1")
        return rows.assign(text=rows["caption"], prompt=rows["caption"])
    items = pd.concat([pool, store.split(TEST)], ignore_index=True)
    drawn = vqa.vqa_split(items, percent, seed, n_test=len(store.split(TEST)))
    rows = pool[pool["question_id"].isin(drawn.loc[drawn["split"] == "train", "question_id"])].reset_index(drop=True)
    right = [statements.declarative(q, a) for q, a in zip(rows["question"], rows["answer"])]
    return rows.assign(text=[statements.statement(q, a) for q, a in zip(rows["question"], rows["answer"])], prompt=right)


def answer_vocabulary(pool: pd.DataFrame, k: int) -> dict[str, list[str]]:
    """Each answer type's ``k`` most frequent answers in ``pool`` (ties: alphabetical)."""
    vocab = {}
    for kind, answers in pool.groupby(VQA_KIND)["answer"]:
        counts = answers.value_counts()
        vocab[str(kind)] = sorted(counts.index, key=lambda a: (-counts[a], a))[:k]
    return vocab


def _vqa_examples(rows: pd.DataFrame, vocab: dict[str, list[str]], add_own: bool) -> TextExamples:
    everything = list(dict.fromkeys(a for answers in vocab.values() for a in answers))
    per_question = []
    for kind, answer in zip(rows[VQA_KIND], rows["answer"]):
        candidates = list(vocab.get(kind, everything))
        if add_own and answer not in candidates:
            candidates.append(answer)
        per_question.append(candidates)
    texts = [[statements.statement(q, a) for a in cands] for q, cands in zip(rows["question"], per_question)]
    index = index_texts([t for ts in texts for t in ts])
    answer_of = {t: a for ts, cands in zip(texts, per_question) for t, a in zip(ts, cands)}
    mask = np.zeros((len(rows), len(index)), dtype=bool)
    label = np.full(len(rows), NO_LABEL, dtype=np.int64)
    for e, (ts, cands, answer) in enumerate(zip(texts, per_question, rows["answer"])):
        mask[e, [index[t] for t in ts]] = True
        if answer in cands:
            label[e] = index[ts[cands.index(answer)]]
    return TextExamples(list(index), np.arange(len(rows)), label, rows[VQA_KIND].to_numpy(dtype=str), candidates=mask,
                        answers=[answer_of[t] for t in index], truth=rows["answer"].tolist(),
                        human_answers=[list(a) for a in rows["answers"]])


def training_examples(store: Any, rows: pd.DataFrame, vqa_answers: int) -> TextExamples:
    """The few-shot rows as examples: each image's drawn caption, or each question among its candidates."""
    if store.task == "retrieval":
        index = index_texts(rows["text"].tolist())
        return TextExamples(list(index), np.arange(len(rows)), rows["text"].map(index).to_numpy(),
                            np.array(["caption"] * len(rows)))
    return _vqa_examples(rows, answer_vocabulary(store.split(POOL), vqa_answers), add_own=True)


def evaluation_examples(store: Any, rows: pd.DataFrame, vqa_answers: int) -> TextExamples:
    """The test rows as examples: every test caption with its relevant images, or every question."""
    if store.task == "retrieval":
        captions = store.texts[store.texts["split"] == TEST]
        position = pd.Series(np.arange(len(rows)), index=rows["image_id"].to_numpy())
        image = position.loc[captions["image_id"].to_numpy()].to_numpy()
        index = index_texts(captions["caption"].tolist())
        text = captions["caption"].map(index).to_numpy()
        relevant = np.zeros((len(rows), len(index)), dtype=bool)
        relevant[image, text] = True
        return TextExamples(list(index), image, text, np.array(["caption"] * len(captions)), relevant=relevant)
    return _vqa_examples(rows, answer_vocabulary(store.split(POOL), vqa_answers), add_own=False)
