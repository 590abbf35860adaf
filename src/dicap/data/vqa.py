"""VQAv2 data with CPL's few-shot protocol.

VQAv2 ships questions and answers in two files per split:

* ``v2_OpenEnded_mscoco_<subtype>_questions.json``:
  ``{"data_subtype": "val2014", "questions": [{"image_id", "question", "question_id"}]}``
* ``v2_mscoco_<subtype>_annotations.json``: ``{"data_subtype", "annotations": [{"question_id",
  "image_id", "question_type", "answer_type", "multiple_choice_answer", "answers": [10 x
  {"answer", "answer_confidence", "answer_id"}]}]}``

:func:`read_vqa` joins them into one table, one row per question: ``question_id``,
``image_id``, ``image`` (``<subtype>/COCO_<subtype>_<image id, 12 digits>.jpg``, relative to
the image root), ``question``, ``question_type``, ``answer_type``, ``answer`` (the
``multiple_choice_answer``, what the top-1 metric compares with) and ``answers`` (the 10 human
answers, in answer_id order, which the official accuracy needs).  A question without its
annotation (or the reverse), a duplicate question id, an image id that differs between the
two files or an answer list that is not 10 long is refused with one line naming the file.

CPL's split (eric-ai-lab/CPL, dataset_processing/VQA/split.py) works on "items": the rows of
its ``all.json``, one per question with its T5 statement, concatenated from per-category files
in directory-listing order (so its order is the filesystem's, and the file itself is only a
Git-LFS pointer in the repository).  Test = the last 1,000 items, training =
``int(len(all) * f)`` items drawn from the others (``df[:-1000].sample(n, random_state=seed)``):
note the count is a fraction of *all* items, not of the rest as the issue paraphrases it;
we follow the code.  Here an item is one question, the order is by ``question_id`` (which
VQAv2 builds as image id x 1000 + k, so the test set is the questions of the last images,
independent of the file's order), and the training draw is the first n of a seeded
permutation of the rest (nested across fractions for one seed).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from dicap.data.annotation_files import load_json_list, percent_count, refuse_duplicates, require

N_TEST = 1000
N_ANSWERS = 10  # every VQAv2 question has 10 human answers; the official accuracy averages over them


def read_vqa(questions_path: str | os.PathLike, annotations_path: str | os.PathLike) -> pd.DataFrame:
    """One row per question of the two VQAv2 files, sorted by question id (module docstring)."""
    data, questions = load_json_list(questions_path, "questions")
    _, annotations = load_json_list(annotations_path, "annotations")
    subtype = data.get("data_subtype")
    if not isinstance(subtype, str) or not re.fullmatch(r"[a-z]+\d{4}", subtype):
        raise ValueError(f"{questions_path}: bad or missing 'data_subtype' ({subtype!r}; e.g. 'val2014' names the COCO image folder)")
    for i, q in enumerate(questions):
        require(questions_path, f"questions[{i}]", q, {"question_id": int, "image_id": int, "question": str})
    for i, a in enumerate(annotations):
        where = f"annotations[{i}]"
        require(annotations_path, where, a, {"question_id": int, "image_id": int, "question_type": str, "answer_type": str,
                                             "multiple_choice_answer": str, "answers": list})
        if len(a["answers"]) != N_ANSWERS:
            raise ValueError(f"{annotations_path}: {where} (question_id {a['question_id']}) has {len(a['answers'])} 'answers', "
                             f"expected {N_ANSWERS}")
        for j, answer in enumerate(a["answers"]):
            require(annotations_path, f"{where}.answers[{j}]", answer, {"answer": str, "answer_id": int})
    refuse_duplicates(questions_path, "question_id", (q["question_id"] for q in questions))
    refuse_duplicates(annotations_path, "question_id", (a["question_id"] for a in annotations))
    by_id = {a["question_id"]: a for a in annotations}
    rows = []
    for q in questions:
        a = by_id.pop(q["question_id"], None)
        if a is None:
            raise ValueError(f"{annotations_path}: no annotation for question_id {q['question_id']} of {Path(questions_path).name}")
        if a["image_id"] != q["image_id"]:
            raise ValueError(f"{annotations_path}: question_id {q['question_id']} has image_id {a['image_id']}, "
                             f"but {q['image_id']} in {Path(questions_path).name}")
        rows.append({"question_id": q["question_id"], "image_id": q["image_id"],
                     "image": f"{subtype}/COCO_{subtype}_{q['image_id']:012d}.jpg", "question": q["question"].strip(),
                     "question_type": a["question_type"], "answer_type": a["answer_type"],
                     "answer": a["multiple_choice_answer"],
                     "answers": [x["answer"] for x in sorted(a["answers"], key=lambda x: x["answer_id"])]})
    if by_id:
        raise ValueError(f"{annotations_path}: question_id {min(by_id)} has no question in {Path(questions_path).name}")
    return pd.DataFrame(rows).sort_values("question_id").reset_index(drop=True)


def few_shot_count(n_items: int, percent: float) -> int:
    """CPL's training count: ``int(n_items * percent / 100)`` over *all* items."""
    return percent_count(n_items, percent, "floor")


def vqa_split(table: pd.DataFrame, percent: float, seed: int, n_test: int = N_TEST) -> pd.DataFrame:
    """The test items (the last ``n_test`` by question id) and the seeded training items, with a
    ``split`` column (train | test); training rows sorted by question id, then the test rows."""
    items = table.sort_values("question_id").reset_index(drop=True)
    if len(items) <= n_test:
        raise ValueError(f"{len(items)} questions cannot give a test set of {n_test} and any training items")
    rest, test = items.iloc[:-n_test], items.iloc[-n_test:]
    n = few_shot_count(len(items), percent)
    if not 1 <= n <= len(rest):
        raise ValueError(f"{percent} % of {len(items)} questions gives {n} training items; "
                         f"it must be between 1 and the {len(rest)} non-test questions")
    order = np.random.default_rng([seed, 0]).permutation(len(rest))
    train = rest.iloc[np.sort(order[:n])]
    return pd.concat([train.assign(split="train"), test.assign(split="test")], ignore_index=True)
