"""The paper suite's VQA data (data/vqa.py): the VQAv2 table with its ten answers, CPL's split,
and bad files refused in one line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest

from dicap.data.vqa import read_vqa, vqa_split
from local_mirror import vqa_files


def _write(tmp_path: Path, name: str, obj) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


# --- VQA: table and CPL's split ---------------------------------------------------------------


def _vqa_table(tmp_path: Path, n_images: int = 300, per_image: int = 4) -> pd.DataFrame:
    """The VQAv2 table of ``n_images`` x ``per_image`` questions (local_mirror.vqa_files), as read_vqa reads it."""
    return _read_vqa_table(tmp_path, n_images, per_image).copy()


_TABLES: dict[tuple[int, int], pd.DataFrame] = {}


def _read_vqa_table(tmp_path: Path, n_images: int, per_image: int) -> pd.DataFrame:
    """Each size is written and read once per session: the property tests below reuse a size."""
    if (n_images, per_image) not in _TABLES:
        q, a = vqa_files(n_images, per_image)
        (tmp_path / "q.json").write_bytes(q)
        (tmp_path / "a.json").write_bytes(a)
        _TABLES[n_images, per_image] = read_vqa(tmp_path / "q.json", tmp_path / "a.json")
    return _TABLES[n_images, per_image]


def test_vqa_table_keeps_ten_answers(tmp_path):
    table = _vqa_table(tmp_path, 3, 2)
    assert list(table.columns) == ["question_id", "image_id", "image", "question", "question_type", "answer_type",
                                   "answer", "answers"]
    row = table.iloc[0].to_dict()
    assert row["question_id"] == 1000 and row["image"] == "val2014/COCO_val2014_000000000001.jpg"
    assert row["answers"] == ["red"] * 7 + ["blue"] * 3 and row["answer"] == "red"
    assert table["question_id"].is_monotonic_increasing


def test_vqa_split_follows_cpl(tmp_path):
    table = _vqa_table(tmp_path)  # 1,200 questions
    split = vqa_split(table, 3, seed=1)
    test = split[split["split"] == "test"]
    assert test["question_id"].tolist() == table["question_id"].tolist()[-1000:]
    assert (split["split"] == "train").sum() == 36  # int(1200 * 3 %): a fraction of ALL items, as CPL's code
    assert set(split.loc[split["split"] == "train", "question_id"]).isdisjoint(test["question_id"])
    pd.testing.assert_frame_equal(split, vqa_split(table.sample(frac=1, random_state=3), 3, seed=1))
    other = vqa_split(table, 3, seed=2)
    assert not split.loc[split["split"] == "train", "question_id"].reset_index(drop=True).equals(
        other.loc[other["split"] == "train", "question_id"].reset_index(drop=True))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("percent", [0.5, 1, 3])
def test_vqa_split_properties(tmp_path, seed, percent):
    table = _vqa_table(tmp_path, 400 + 50 * seed, 3)
    split = vqa_split(table, percent, seed)
    train = split[split["split"] == "train"]
    assert len(train) == len(table) * percent // 100 and train["question_id"].is_unique
    assert train["question_id"].max() < split.loc[split["split"] == "test", "question_id"].min()
    small = vqa_split(table, 0.5, seed)
    assert set(small.loc[small["split"] == "train", "question_id"]) <= set(train["question_id"])


def test_vqa_split_refuses_too_few_items(tmp_path):
    with pytest.raises(ValueError, match="cannot give a test set of 1000"):
        vqa_split(_vqa_table(tmp_path, 100, 10), 3, seed=1)
    with pytest.raises(ValueError, match="gives 0 training items"):
        vqa_split(_vqa_table(tmp_path, 400, 3), 0.05, seed=1)


def _vqa_case(case: str) -> tuple[dict, dict, str, str]:
    """(questions, annotations, which file the error names, message)."""
    q, a = (json.loads(b) for b in vqa_files(5, 2))
    if case == "duplicate question id":
        q["questions"][3]["question_id"] = q["questions"][2]["question_id"]
        return q, a, "q", f"duplicate 'question_id' {q['questions'][2]['question_id']}"
    if case == "duplicate annotation":
        a["annotations"][4] = copy.deepcopy(a["annotations"][5])
        return q, a, "a", f"duplicate 'question_id' {a['annotations'][5]['question_id']}"
    if case == "question without annotation":
        del a["annotations"][0]
        return q, a, "a", "no annotation for question_id 1000 of q.json"
    if case == "annotation without question":
        del q["questions"][-1]
        return q, a, "a", "question_id 5001 has no question in q.json"
    if case == "image id mismatch":
        a["annotations"][1]["image_id"] = 99
        return q, a, "a", "question_id 1001 has image_id 99, but 1 in q.json"
    if case == "nine answers":
        del a["annotations"][2]["answers"][0]
        return q, a, "a", "annotations[2] (question_id 2000) has 9 'answers', expected 10"
    if case == "missing answer key":
        del a["annotations"][0]["answers"][5]["answer"]
        return q, a, "a", "annotations[0].answers[5] has no 'answer'"
    if case == "missing question key":
        del q["questions"][1]["question"]
        return q, a, "q", "questions[1] has no 'question'"
    if case == "missing data_subtype":
        del q["data_subtype"]
        return q, a, "q", "bad or missing 'data_subtype'"
    if case == "no annotations key":
        del a["annotations"]
        return q, a, "a", "no top-level key 'annotations'"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["duplicate question id", "duplicate annotation", "question without annotation",
                                  "annotation without question", "image id mismatch", "nine answers",
                                  "missing answer key", "missing question key", "missing data_subtype",
                                  "no annotations key"])
def test_bad_vqa_files_are_refused_in_one_line(tmp_path, case):
    q, a, culprit, message = _vqa_case(case)
    paths = {"q": _write(tmp_path, "q.json", q), "a": _write(tmp_path, "a.json", a)}
    with pytest.raises(ValueError) as err:
        read_vqa(paths["q"], paths["a"])
    assert str(err.value).startswith(f"{paths[culprit]}: ") and message in str(err.value), str(err.value)
    assert "\n" not in str(err.value)
