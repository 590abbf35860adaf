"""The two VQA metrics CPL's code reports: the official VQA accuracy and top-1.

Official accuracy (the VQA evaluation script, ``vqaEval.py``, which CPL vendors): an answer is
fully right when at least 3 of the 10 annotators gave it, so for each of the 10
leave-one-annotator-out subsets of 9 answers the score is ``min(#matches / 3, 1)``, and the
question's accuracy is the mean over the 10 subsets.  Two human answers "red" give
``(8 x 2/3 + 2 x 1/3) / 10 = 0.6``, not 2/3.  Before matching, the script normalises both the
prediction and the human answers - but only when the 10 human answers are not all identical
(a quirk kept here): punctuation handled as in its ``processPunctuation``, lower case, number
words "none"/"zero"..."ten" to digits, articles a/an/the dropped.  Its table of ~170
apostrophe-less contractions ("dont" -> "don't") is not reproduced: candidates drawn from the
annotators' own answers carry the same spelling as the ground truth.

Top-1 (CPL's evaluator): the fraction of questions whose predicted answer is exactly the
``multiple_choice_answer`` (the most common human answer).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ("a", "an", "the")
# The script's pattern, kept verbatim: "(?!<=\d)" is a look-ahead (a typo for a look-behind),
# so in effect a period is removed unless a digit follows it.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def normalize_answer(text: str) -> str:
    """The script's processPunctuation then processDigitArticle (without contractions)."""
    out = text
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = PERIOD_STRIP.sub("", out)
    words = [NUMBER_WORDS.get(w, w) for w in out.lower().split()]
    return " ".join(w for w in words if w not in ARTICLES)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The official accuracy of one prediction against the human answers (10 in VQAv2), in [0, 1]."""
    if not answers:
        raise ValueError("no human answers to score against")
    clean = lambda s: s.replace("\n", " ").replace("\t", " ").strip()  # noqa: E731
    truth, guess = [clean(a) for a in answers], clean(prediction)
    if len(set(truth)) > 1:
        truth, guess = [normalize_answer(a) for a in truth], normalize_answer(guess)
    scores = []
    for left_out in range(len(truth)):
        matches = sum(1 for i, a in enumerate(truth) if i != left_out and a == guess)
        scores.append(min(1.0, matches / 3))
    return sum(scores) / len(scores)


def mean_vqa_accuracy(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
    """Mean official accuracy over questions, in [0, 1] (the script reports 100x this)."""
    if len(predictions) != len(answers) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} questions")
    return sum(vqa_accuracy(p, a) for p, a in zip(predictions, answers)) / len(predictions)


def top1_accuracy(predictions: Sequence[str], targets: Sequence[str]) -> float:
    """Fraction of predictions equal to the target answer (``multiple_choice_answer``)."""
    if len(predictions) != len(targets) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    return sum(p == t for p, t in zip(predictions, targets)) / len(predictions)
