"""The paper suite's retrieval and VQA stores (src/dicap/data/text_store.py): what
prepare_dataset and make_split write for Flickr30k / MSCOCO / VQAv2, and the examples
prompt training and evaluation read from them."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicap.data import statements, text_store
from dicap.data.store import DATA_ROOT_ENV, DatasetStore
from local_mirror import OBJECT_CAPTIONS, VQA_ITEMS, captioned_flickr, coco_images, jpeg, karpathy_json, varied_vqa

FLICKR = {"key": "flickr30k", "task": "retrieval", "image_root": "flickr30k-images",
          "annotations": {"captions": "dataset_flickr30k.json"}}
VQA = {"key": "vqav2", "task": "vqa", "image_root": ".",
       "annotations": {"questions": "questions.json", "answers": "annotations.json"}}


def _open(store: Path, data_root: Path) -> DatasetStore:
    """The store as a job opens it: its image root resolves against this machine's data.root."""
    with mock.patch.dict(os.environ, {DATA_ROOT_ENV: str(data_root)}):
        return DatasetStore.open(store)


def _flickr(root: Path, n_train: int = 20, n_test: int = 4) -> DatasetStore:
    karpathy, images = captioned_flickr(n_train, 2, n_test)
    data = root / "flickr30k"
    data.mkdir(parents=True)
    (data / "dataset_flickr30k.json").write_bytes(karpathy)
    tarfile.open(fileobj=io.BytesIO(images)).extractall(data, filter="data")
    text_store.build_text_store(FLICKR, data, 8, {}, root / "store")
    return _open(root / "store", root)


def _vqa(root: Path, n_images: int = 12, n_test: int = 6) -> DatasetStore:
    questions, annotations, images = varied_vqa(n_images)
    data = root / "vqav2"
    data.mkdir(parents=True)
    (data / "questions.json").write_bytes(questions)
    (data / "annotations.json").write_bytes(annotations)
    zipfile.ZipFile(io.BytesIO(images)).extractall(data)
    text_store.build_text_store(VQA, data, 8, {"vqa_test_items": n_test}, root / "store")
    return _open(root / "store", root)


def test_retrieval_store_holds_the_pool_and_the_test_images(tmp_path):
    store = _flickr(tmp_path)
    assert store.task == "retrieval" and store.is_text_task and store.classes == []
    assert store.table.groupby("split").size().to_dict() == {"pool": 20, "test": 4}  # Karpathy val is neither
    assert (store.table["label"] == text_store.NO_LABEL).all()
    assert store.pixels(store.split("test")).shape == (4, 8, 8, 3)
    test_captions = store.texts[store.texts["split"] == "test"]
    assert len(test_captions) == 4 * 5 and set(test_captions["image_id"]) == set(store.split("test")["image_id"])


def test_mscoco_store_keeps_karpathy_train_as_the_pool_and_its_paths(tmp_path):
    """MSCOCO's entries carry a filepath (train2014/ or val2014/); restval, val and test come
    from COCO val2014, and only Karpathy train is drawn from (data/retrieval.py)."""
    images = coco_images(n_train=10, n_restval=3, n_val=2, n_test=4)
    data = tmp_path / "mscoco"
    data.mkdir()
    (data / "dataset_coco.json").write_bytes(karpathy_json("coco", images))
    for entry in images:
        (data / entry["filepath"]).mkdir(exist_ok=True)
        (data / entry["filepath"] / entry["filename"]).write_bytes(jpeg(entry["imgid"]))
    entry = {"key": "mscoco", "task": "retrieval", "image_root": ".", "annotations": {"captions": "dataset_coco.json"}}
    text_store.build_text_store(entry, data, 8, {}, tmp_path / "store")
    store = _open(tmp_path / "store", tmp_path)
    assert store.table.groupby("split").size().to_dict() == {"pool": 10, "test": 4}
    assert store.split("pool")["path"].str.startswith("train2014/").all() and store.split("test")["path"].str.startswith("val2014/").all()
    test_captions = store.texts[store.texts["split"] == "test"]
    assert test_captions.groupby("image_id").size().tolist() == [5] * 4  # a sixth caption is not a test caption
    assert len(text_store.few_shot_split(store, 50, 1)) == 5


@pytest.mark.parametrize("build", [_flickr, _vqa])
def test_a_text_store_records_its_image_root_relative_to_the_data_root(tmp_path, build):
    """Built on a cluster, pulled elsewhere: the store finds its images under the local data.root
    (issue 27.1; the classification stores already did)."""
    cluster, laptop = tmp_path / "cluster", tmp_path / "laptop"
    build(cluster)
    recorded = json.loads((cluster / "store" / "classes.json").read_text())["image_root"]
    assert not Path(recorded).is_absolute() and ".." not in Path(recorded).parts, recorded
    shutil.copytree(cluster, laptop)
    shutil.rmtree(cluster)
    store = _open(laptop / "store", laptop)
    assert store.image_root == laptop / recorded and store.image_path(store.table["path"].iloc[0]).is_file()


def test_a_missing_image_stops_the_store_naming_it(tmp_path):
    _flickr(tmp_path)
    (tmp_path / "flickr30k/flickr30k-images/1000003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1000003.jpg"):
        text_store.build_text_store(FLICKR, tmp_path / "flickr30k", 8, {}, tmp_path / "again")


def test_an_annotation_path_outside_the_dataset_is_refused(tmp_path):
    _flickr(tmp_path)
    entry = {**FLICKR, "annotations": {"captions": "../../etc/passwd"}}
    with pytest.raises(ValueError, match="outside the dataset root"):
        text_store.build_text_store(entry, tmp_path / "flickr30k", 8, {}, tmp_path / "again")


@pytest.fixture(scope="module")
def flickr(tmp_path_factory) -> DatasetStore:
    """One Flickr store for the tests that only read it."""
    return _flickr(tmp_path_factory.mktemp("flickr"))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), percent=st.sampled_from([5, 10, 25, 50]))
def test_retrieval_split_draws_one_own_caption_per_image(flickr, seed, percent):
    store = flickr
    rows = text_store.few_shot_split(store, percent, seed)
    assert len(rows) == round(20 * percent / 100 + 1e-9) and rows["image_id"].is_unique
    assert set(rows["split"]) == {"pool"} and rows["index"].tolist() == sorted(rows["index"])
    own = store.texts.set_index(["image_id", "caption_index"])["caption"]
    assert [own[(i, k)] for i, k in zip(rows["image_id"], rows["caption_index"])] == rows["text"].tolist()
    assert (rows["prompt"] == rows["text"]).all()
    assert rows.equals(text_store.few_shot_split(store, percent, seed))  # deterministic


def test_retrieval_examples_score_every_test_caption_against_its_own_image(tmp_path):
    store = _flickr(tmp_path)
    test = store.split("test")
    examples = text_store.evaluation_examples(store, test, 20)
    assert examples.relevant.shape == (4, len(examples.texts)) and examples.relevant.sum(1).tolist() == [5] * 4
    for image, text in zip(examples.image, examples.label):
        caption = examples.texts[text]
        assert caption.endswith(f" {test['image_id'][image]}.")  # captions name their image's id
    rows = text_store.few_shot_split(store, 25, 3)
    train = text_store.training_examples(store, rows, 20)
    assert [train.texts[i] for i in train.label] == rows["text"].tolist() and train.candidates is None


def test_vqa_store_tests_on_the_last_questions(tmp_path):
    store = _vqa(tmp_path)
    assert store.task == "vqa" and store.table.groupby("split").size().to_dict() == {"pool": 30, "test": 6}
    test = store.split("test")
    assert test["question_id"].min() > store.split("pool")["question_id"].max()
    assert all(len(a) == 10 for a in test["answers"])


def test_vqa_split_counts_a_share_of_all_questions_and_states_the_right_answer(tmp_path):
    store = _vqa(tmp_path)
    rows = text_store.few_shot_split(store, 25, 7)
    assert len(rows) == int(36 * 25 / 100) and set(rows["split"]) == {"pool"}
    assert rows["text"].tolist() == [statements.statement(q, a) for q, a in zip(rows["question"], rows["answer"])]
    assert rows["prompt"].tolist() == [statements.declarative(q, a) for q, a in zip(rows["question"], rows["answer"])]


def test_answer_vocabulary_is_by_answer_type_most_frequent_first(tmp_path):
    pool = pd.DataFrame({"answer_type": ["other"] * 5 + ["yes/no"] * 3,
                         "answer": ["red", "blue", "red", "green", "blue", "no", "yes", "no"]})
    assert text_store.answer_vocabulary(pool, 2) == {"other": ["blue", "red"], "yes/no": ["no", "yes"]}


@settings(max_examples=10, deadline=None)
@given(k=st.integers(1, 3), seed=st.integers(0, 1000))
def test_vqa_candidates_are_the_answer_types_vocabulary(tmp_path_factory, k, seed):
    store = _vqa(tmp_path_factory.mktemp("vqa"))
    vocab = text_store.answer_vocabulary(store.split("pool"), k)
    rows = text_store.few_shot_split(store, 50, seed)
    for examples, rows_, own in ((text_store.training_examples(store, rows, k), rows, True),
                                 (text_store.evaluation_examples(store, store.split("test"), k), store.split("test"), False)):
        for e, (kind, answer, question) in enumerate(zip(rows_["answer_type"], rows_["answer"], rows_["question"])):
            stated = {examples.answers[t] for t in np.flatnonzero(examples.candidates[e])}
            assert stated == set(vocab[kind]) | ({answer} if own else set())
            assert all(examples.texts[t].startswith(question) for t in np.flatnonzero(examples.candidates[e]))
            if examples.label[e] >= 0:
                assert examples.answers[examples.label[e]] == answer and examples.candidates[e, examples.label[e]]
            else:  # only a test question whose answer is outside the vocabulary
                assert not own and answer not in vocab[kind]
        assert examples.truth == rows_["answer"].tolist() and all(len(h) == 10 for h in examples.human_answers)


def test_the_local_datasets_cover_every_answer_type_and_uneditable_captions():
    assert {kind for _, kind, _ in VQA_ITEMS} == {"yes/no", "number", "other"}
    from dicap.counterfactual.caption_edits import find_object

    assert sum(find_object(c) is None for c in OBJECT_CAPTIONS) == 1
