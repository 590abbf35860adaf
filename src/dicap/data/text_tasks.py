"""The embedded suite's image-text retrieval and VQA, written from the structural causal model.

Retrieval and VQA are scored like CPL's: CLIP compares an image with texts that follow the
learned context, ``[ctx] <text>.``; the text is a caption (retrieval) or an answer's statement
(VQA).  Every text here is written in the grammar the tiny CLIP was pretrained on
(:func:`dicap.data.scm.caption`: ``a photo of a [size] [colour] <class> [on <background>][,
<place>].``) with the leading "a photo of a" left to the context, whose initial value it is:
the untrained context (zero-shot) then reads exactly a pretraining caption.

- **Captions**: five templates per image, each naming the class and a different set of the
  image's factors, so only an image with those very factors matches all five.  A caption is
  relevant to every image it describes (equal text, equal relevance).
- **Questions**: one per factor, naming the object as real VQA questions do ("what colour is
  the circle?").  Each answer becomes an exact templated statement ("red circle"); the
  candidates are every value of the asked factor.  The class question ("what is in the
  picture?") has every class as a candidate.

A generated counterfactual changes the class and keeps the rest, so for an image's caption and
for every one of its statements (each names the class) the counterfactual is a hard negative:
the same images, and the same audit, as classification's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dicap import layout
from dicap.data import scm

TASKS = tuple(layout.TASK_TABLES)  # retrieval, vqa: layout owns the names (paths, tables)
# Caption templates: the class plus a different set of factors each (scm.caption's grammar).
CAPTION_TEMPLATES = (
    "{fg} {cls}",
    "{cls} on {bg}",
    "{size} {cls}, {place}",
    "{size} {fg} {cls} on {bg}",
    "{fg} {cls} on {bg}, {place}",
)
# Question type -> (question, statement template, the factor's possible answers).
QUESTION_TYPES = ("object", "colour", "background", "place", "size")


@dataclass(frozen=True)
class Question:
    """One templated question about one image, its candidate statements and the right one."""

    type: str
    text: str
    statements: tuple[str, ...]
    answers: tuple[str, ...]
    answer: int  # index into answers / statements


def _words(dataset: str, label: int, f: scm.Factors) -> dict[str, str]:
    return {"cls": scm.class_names(dataset)[label], "fg": scm.OBJECT_NAMES[f.fg], "bg": scm.BACKGROUND_NAMES[f.bg],
            "size": scm.size_word(f), "place": scm.horizontal_word(f)}


def captions(dataset: str, label: int, f: scm.Factors) -> list[str]:
    """The image's five captions (without the "a photo of a" the context stands for)."""
    words = _words(dataset, label, f)
    return [t.format(**words) for t in CAPTION_TEMPLATES]


def questions(dataset: str, label: int, f: scm.Factors) -> list[Question]:
    """One question per factor in :data:`QUESTION_TYPES`, with exact templated statements."""
    words = _words(dataset, label, f)
    cls = words["cls"]
    names = scm.class_names(dataset)
    asked = {
        "object": ("what is in the picture?", "{}", names, cls),
        "colour": (f"what colour is the {cls}?", f"{{}} {cls}", scm.OBJECT_NAMES, words["fg"]),
        "background": (f"what is the {cls} on?", f"{cls} on {{}}", scm.BACKGROUND_NAMES, words["bg"]),
        "place": (f"where is the {cls}?", f"{cls}, {{}}", scm.HORIZONTAL_WORDS, words["place"]),
        "size": (f"how big is the {cls}?", f"{{}} {cls}", scm.SIZE_WORDS, words["size"]),
    }
    out = []
    for kind in QUESTION_TYPES:
        text, template, answers, truth = asked[kind]
        out.append(Question(kind, text, tuple(template.format(a) for a in answers), tuple(answers), list(answers).index(truth)))
    return out


_INTEGER_FACTORS = ("bg", "fg", "noise_seed", "glyph", "style")


def _factors(row: pd.Series) -> scm.Factors:
    """A table row's factors, typed as the SCM draws them (an all-numeric row reads back as floats)."""
    return scm.Factors(**{k: int(row[k]) if k in _INTEGER_FACTORS else float(row[k]) for k in scm.FACTOR_COLUMNS if k in row})


def retrieval_texts(dataset: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Every caption of every row: columns ``image`` (position in ``rows``), ``caption`` (0-4), ``text``."""
    out = [{"image": i, "caption": k, "text": text}
           for i, (_, row) in enumerate(rows.iterrows()) for k, text in enumerate(captions(dataset, int(row["label"]), _factors(row)))]
    return pd.DataFrame(out, columns=["image", "caption", "text"])


def draw_training_captions(dataset: str, rows: pd.DataFrame, seed: int) -> list[str]:
    """One caption per few-shot image, drawn by ``seed`` (CPL: one of its five at random)."""
    rng = np.random.default_rng([seed, 0xCA9])
    picks = rng.integers(len(CAPTION_TEMPLATES), size=len(rows))
    return [captions(dataset, int(row["label"]), _factors(row))[k] for k, (_, row) in zip(picks, rows.iterrows())]


def vqa_items(dataset: str, rows: pd.DataFrame) -> list[tuple[int, Question]]:
    """Every question of every row as (position in ``rows``, question)."""
    return [(i, q) for i, (_, row) in enumerate(rows.iterrows()) for q in questions(dataset, int(row["label"]), _factors(row))]


@dataclass(frozen=True)
class TextExamples:
    """What a text task trains or is scored on: texts, and examples that each pick one.

    ``image[e]`` is the row (of the split) example ``e`` is about; ``label[e]`` the index in
    ``texts`` of its right text; ``candidates`` (examples x texts, or None when every text
    competes) the texts it is scored among; ``kind[e]`` its question type ("caption" for
    retrieval).  ``relevant`` (images x texts, retrieval only) marks every text that
    describes each image; ``answers`` (VQA only) the answer each text states.
    """

    texts: list[str]
    image: np.ndarray
    label: np.ndarray
    kind: np.ndarray
    candidates: np.ndarray | None = None
    relevant: np.ndarray | None = None
    answers: list[str] | None = None  # VQA: the answer each text states
    truth: list[str] | None = None  # VQA: each question's right answer (default: the answer its label states)
    human_answers: list[list[str]] | None = None  # VQA: each question's 10 human answers (default: the truth, 10 times)


def index_texts(texts: list[str]) -> dict[str, int]:
    """Each distinct text's position, in order of first appearance."""
    return {t: i for i, t in enumerate(dict.fromkeys(texts))}


def training_examples(task: str, dataset: str, rows: pd.DataFrame, seed: int) -> TextExamples:
    """The few-shot rows as ``task`` examples: one drawn caption each, or all five questions each."""
    if task == "retrieval":
        drawn = draw_training_captions(dataset, rows, seed)
        index = index_texts(drawn)
        return TextExamples(list(index), np.arange(len(rows)), np.array([index[t] for t in drawn]),
                            np.array(["caption"] * len(rows)))
    return _vqa_examples(dataset, rows)


def evaluation_examples(task: str, dataset: str, rows: pd.DataFrame) -> TextExamples:
    """The test rows as ``task`` examples: every caption (with relevance), or every question."""
    if task == "retrieval":
        table = retrieval_texts(dataset, rows)
        index = index_texts(table["text"].tolist())
        relevant = np.zeros((len(rows), len(index)), dtype=bool)
        relevant[table["image"].to_numpy(), table["text"].map(index).to_numpy()] = True
        return TextExamples(list(index), table["image"].to_numpy(), table["text"].map(index).to_numpy(),
                            np.array(["caption"] * len(table)), relevant=relevant)
    return _vqa_examples(dataset, rows)


def _vqa_examples(dataset: str, rows: pd.DataFrame) -> TextExamples:
    items = vqa_items(dataset, rows)
    answer_of = {s: a for _, q in items for s, a in zip(q.statements, q.answers)}
    index = index_texts(list(answer_of))
    candidates = np.zeros((len(items), len(index)), dtype=bool)
    for e, (_, q) in enumerate(items):
        candidates[e, [index[s] for s in q.statements]] = True
    return TextExamples(list(index), np.array([i for i, _ in items]), np.array([index[q.statements[q.answer]] for _, q in items]),
                        np.array([q.type for _, q in items]), candidates=candidates, answers=[answer_of[t] for t in index])


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return task
