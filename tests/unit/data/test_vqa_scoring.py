"""The official VQA accuracy and top-1 (data/vqa_scoring.py), on hand-computed cases."""

from __future__ import annotations

import pytest

from dicap.data.vqa_scoring import mean_vqa_accuracy, normalize_answer, top1_accuracy, vqa_accuracy

# --- VQA accuracy (official formula) and top-1 ------------------------------------------------


@pytest.mark.parametrize("matches, expected", [
    (0, 0.0),
    (1, 0.3),   # 9 subsets hold the match: (9 x 1/3) / 10
    (2, 0.6),   # (2 x 1/3 + 8 x 2/3) / 10
    (3, 0.9),   # (3 x 2/3 + 7 x 1) / 10
    (4, 1.0),   # every subset of 9 holds at least 3
    (10, 1.0),
])
def test_vqa_accuracy_leave_one_out(matches, expected):
    answers = ["red"] * matches + ["blue", "green", "white", "black", "gray", "pink", "brown", "tan", "gold", "navy"][matches:]
    assert len(answers) == 10
    assert vqa_accuracy("red", answers) == pytest.approx(expected)


def test_vqa_accuracy_normalises_only_when_humans_disagree():
    mixed = ["2", "2", "2", "two", "3", "3", "4", "2", "1", "2"]
    assert vqa_accuracy("Two", mixed) == pytest.approx(1.0)  # "two" -> "2": 6 matches
    assert vqa_accuracy("the dog.", ["dog"] * 5 + ["puppy"] * 5) == pytest.approx(1.0)
    assert vqa_accuracy("two", ["2"] * 10) == 0.0  # the official script's quirk: unanimous answers are not normalised
    assert vqa_accuracy(" yes\n", ["yes"] * 10) == 1.0
    assert normalize_answer("a red, white car!") == "red white car"
    assert normalize_answer("3.5 feet.") == "3.5 feet"
    assert normalize_answer("1,000") == "1000"


def test_mean_vqa_accuracy_and_top1():
    answers = [["red"] * 10, ["red"] * 2 + ["blue"] * 8, ["yes"] * 10]
    assert mean_vqa_accuracy(["red", "red", "no"], answers) == pytest.approx((1.0 + 0.6 + 0.0) / 3)
    assert top1_accuracy(["red", "red", "no"], ["red", "blue", "yes"]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        mean_vqa_accuracy(["red"], answers)
    with pytest.raises(ValueError):
        top1_accuracy([], [])
