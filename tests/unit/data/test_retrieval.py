"""The paper suite's retrieval (Flickr30k, MSCOCO) and VQA (VQAv2) data layer, without internet:
the registry's own entries are downloaded from the local server (local_mirror.TASK_LAYOUTS:
Karpathy JSON in a caption_datasets.zip, VQAv2 question and annotation zips, COCO image zips),
extracted, parsed and split by CPL's protocol; plus the rule-based statements and the
official VQA accuracy on hand-computed cases."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dicap.data.paper_sources import check_registry, dataset_keys, load_registry, prepare_paper_dataset
from dicap.data.retrieval import few_shot_count, read_karpathy, retrieval_test, retrieval_training
from dicap.data.statements import declarative, statement
from dicap.data.vqa import read_vqa, vqa_split
from dicap.data.vqa_scoring import mean_vqa_accuracy, normalize_answer, top1_accuracy, vqa_accuracy
from dicap.io import read_json
from local_mirror import TASK_LAYOUTS, coco_images, flickr_images, karpathy_image, local_registry, vqa_files, zip_bytes

# --- the registry ---------------------------------------------------------------------------


def test_registry_lists_the_task_datasets_with_sourced_checksums():
    reg = load_registry()
    assert check_registry(reg) == []
    assert dataset_keys(reg, "retrieval") == ["flickr30k", "mscoco"] and dataset_keys(reg, "vqa") == ["vqav2"]
    assert not {"flickr30k", "mscoco", "vqav2"} & set(dataset_keys(reg, "classification"))
    entries = reg["datasets"]
    assert entries["flickr30k"]["manual"] and "{downloads}" in entries["flickr30k"]["instructions"]
    assert [f["filename"] for f in entries["flickr30k"]["files"] if f.get("manual")] == ["flickr30k-images.tar.gz"]
    assert entries["flickr30k"]["annotations"] == {"captions": "dataset_flickr30k.json"}
    assert entries["mscoco"]["annotations"] == {"captions": "dataset_coco.json"}
    assert set(entries["vqav2"]["annotations"]) == {"questions", "answers"}
    for key in ("flickr30k", "mscoco", "vqav2"):
        for f in entries[key]["files"]:
            if f["checksum"] is not None:  # only TFDS' recorded values, cited with the commit
                assert f["checksum_source"].startswith("tensorflow/datasets@") and f["algorithm"] == "sha256"
            else:
                assert f["checksum_note"]
    # one URL, one published value: the shared files carry the same checksum in every entry
    by_url: dict[str, set] = {}
    for entry in entries.values():
        for f in entry["files"]:
            by_url.setdefault(f["url"], set()).add(f["checksum"])
    assert all(len(values) == 1 for url, values in by_url.items() if "image-net.org" not in url and "illinois" not in url)


@pytest.mark.parametrize("change, problem", [
    (lambda e: e.update(task="captioning"), "task 'captioning' not in"),
    (lambda e: e["annotations"].pop("captions"), "task retrieval needs annotations.captions"),
    (lambda e: e["annotations"].update(questions="q.json"), "annotations.questions is not used by task retrieval"),
    (lambda e: e["annotations"].update(captions="../../etc/x.json"), "annotations.captions '../../etc/x.json' leaves"),
    (lambda e: e.update(extract=[]), "annotations listed but nothing is extracted"),
])
def test_check_registry_catches_task_problems(change, problem):
    reg = copy.deepcopy(load_registry())
    change(reg["datasets"]["mscoco"])
    problems = check_registry(reg)
    assert len(problems) == 1 and problems[0].startswith("mscoco: ") and problem in problems[0], problems


# --- download, extract, READY ---------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(TASK_LAYOUTS))
def test_prepare_task_dataset_from_the_local_server(server, tmp_path, key):
    reg = local_registry(server, [key])
    entry = reg["datasets"][key]
    downloads = tmp_path / key / "downloads"
    if key == "flickr30k":  # licence-gated images: the instructions, before any download
        with pytest.raises(FileNotFoundError) as err:
            prepare_paper_dataset(key, tmp_path, reg, base_url=server.base, progress=False)
        assert str(downloads) in str(err.value) and "flickr30k-images.tar.gz" in str(err.value)
        assert server.requests == []
        downloads.mkdir(parents=True)
        (downloads / "flickr30k-images.tar.gz").write_bytes(TASK_LAYOUTS[key][0]["flickr30k-images.tar.gz"])
    record = prepare_paper_dataset(key, tmp_path, reg, base_url=server.base, progress=False)
    dataset = tmp_path / key
    for rel in TASK_LAYOUTS[key][1]:
        assert (dataset / rel).is_file(), rel
    assert record == read_json(dataset / "READY.json")
    assert record["task"] == entry["task"] and record["annotations"] == entry["annotations"]
    assert all((dataset / rel).is_file() for rel in record["annotations"].values())
    auto = [f["filename"] for f in entry["files"] if not f.get("manual")]
    assert sorted(p for p, _, status in server.requests) == sorted(
        p for p, _, status in server.requests if status == 200) and len(server.requests) == len(auto)
    assert record["unverified"] == [f["filename"] for f in entry["files"] if f["checksum"] is None]
    n = len(server.requests)
    assert prepare_paper_dataset(key, tmp_path, reg, base_url=server.base, progress=False) == record
    assert len(server.requests) == n, "a rerun after success must not touch the network"


def test_prepare_refuses_an_archive_without_the_annotation_file(server, tmp_path):
    wrong = zip_bytes({"dataset_flickr8k.json": b'{"images": []}'})
    reg = local_registry(server, ["mscoco"], {"caption_datasets.zip": wrong})
    with pytest.raises(FileNotFoundError, match=r"dataset_coco\.json \(captions\) does not exist after preparing mscoco"):
        prepare_paper_dataset("mscoco", tmp_path, reg, base_url=server.base, progress=False)
    assert not (tmp_path / "mscoco" / "READY.json").exists()


def test_parse_and_split_what_was_downloaded(server, tmp_path):
    reg = local_registry(server, ["mscoco", "vqav2"])
    for key in ("mscoco", "vqav2"):
        prepare_paper_dataset(key, tmp_path, reg, base_url=server.base, progress=False)
    coco = tmp_path / "mscoco"
    images, captions = read_karpathy(coco / reg["datasets"]["mscoco"]["annotations"]["captions"])
    assert len(images) == len(coco_images()) and (coco / images["path"].iloc[0]).is_file()
    assert (coco / images.loc[images["image_id"] == 131, "path"].item()).is_file()
    test_images, test_captions = retrieval_test(images, captions)
    assert len(test_images) == 4 and len(test_captions) == 20  # image 129 has 6 captions; the first 5 are kept
    train = retrieval_training(images, captions, 5, seed=1)
    assert len(train) == 6 and set(train["path"].str.split("/").str[0]) == {"train2014"}

    vqa = tmp_path / "vqav2"
    ann = reg["datasets"]["vqav2"]["annotations"]
    table = read_vqa(vqa / ann["questions"], vqa / ann["answers"])
    assert len(table) == 1200 and (vqa / table["image"].iloc[-1]).is_file()
    split = vqa_split(table, 3, seed=1)
    assert (split["split"] == "test").sum() == 1000 and (split["split"] == "train").sum() == 36


# --- retrieval: Karpathy tables and CPL's splits ----------------------------------------------


def _write(tmp_path: Path, name: str, obj) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def _tables(split_counts: dict[str, int], captions: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Image and caption tables of the real sizes, built directly (a JSON of 123k images is slow)."""
    splits = np.concatenate([[s] * n for s, n in split_counts.items()])
    images = pd.DataFrame({"image_id": np.arange(len(splits)), "path": [f"{i}.jpg" for i in range(len(splits))],
                           "split": splits, "n_captions": captions})
    caps = pd.DataFrame({"image_id": np.repeat(images["image_id"], captions),
                         "caption_index": np.tile(np.arange(captions), len(images)), "split": np.repeat(splits, captions)})
    caps["caption"] = [f"c{i}-{j}" for i, j in zip(caps["image_id"], caps["caption_index"])]
    return images, caps


def test_karpathy_tables(tmp_path):
    flickr = read_karpathy(_write(tmp_path, "dataset_flickr30k.json", {"images": flickr_images(5, 1, 2)}))
    coco = read_karpathy(_write(tmp_path, "dataset_coco.json", {"images": coco_images(3, 1, 1, 2)}))
    images, captions = flickr
    assert list(images.columns) == ["image_id", "path", "split", "n_captions"]
    assert images["path"].tolist()[:2] == ["1000000.jpg", "1000001.jpg"] and len(captions) == 8 * 5
    assert captions.iloc[7].to_dict() == {"image_id": 1, "caption_index": 2, "caption": "Image 1 caption 2.", "split": "train"}
    images, captions = coco
    assert images["path"].iloc[0] == "train2014/COCO_train2014_000000000000.jpg"
    assert images["path"].iloc[-1] == "val2014/COCO_val2014_000000000006.jpg"
    assert captions.groupby("image_id").size().tolist() == [6, 5, 5, 6, 5, 5, 6]


@pytest.mark.parametrize("sizes, expected", [
    ({"train": 29000, "val": 1014, "test": 1000}, [145, 290, 870, 1450]),  # Flickr30k (CPL: 145/290/870/1450)
    ({"train": 82783, "restval": 30504, "val": 5000, "test": 5000}, [414, 828, 2483, 4139]),  # MSCOCO (CPL's counts)
])
def test_few_shot_counts_of_the_real_sizes_are_cpls(sizes, expected):
    images, captions = _tables(sizes)
    assert [few_shot_count(images, p) for p in (0.5, 1, 3, 5)] == expected
    assert len(retrieval_training(images, captions, 3, seed=1)) == expected[2]
    test_images, test_captions = retrieval_test(images, captions)
    assert (len(test_images), len(test_captions)) == (sizes["test"], 5 * sizes["test"])


def test_coco_counts_rule_out_val_and_restval_as_the_pool():
    """CPL's code draws COCO's shots from Karpathy val; neither val nor train + restval gives its counts."""
    val, _ = _tables({"train": 5000})
    with_restval, _ = _tables({"train": 82783 + 30504})
    assert [few_shot_count(val, p) for p in (0.5, 1, 3, 5)] == [25, 50, 150, 250]
    assert [few_shot_count(with_restval, p) for p in (0.5, 1, 3, 5)] == [566, 1133, 3399, 5664]


def test_retrieval_training_is_deterministic_nested_and_seeded():
    images, captions = _tables({"train": 3000, "val": 10, "test": 10}, captions=5)
    a, b = retrieval_training(images, captions, 1, seed=1), retrieval_training(images, captions, 1, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert not a["image_id"].equals(retrieval_training(images, captions, 1, seed=2)["image_id"])
    big = retrieval_training(images, captions, 5, seed=1)
    assert set(a["image_id"]) < set(big["image_id"])  # the 1 % set is inside the 5 % set of the same seed
    assert big.set_index("image_id").loc[a["image_id"], "caption_index"].tolist() == a["caption_index"].tolist()
    # the file's order does not matter: the pool is sorted by image id
    shuffled = images.sample(frac=1, random_state=0)
    pd.testing.assert_frame_equal(retrieval_training(shuffled, captions, 1, seed=1), a)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("percent", [0.5, 1, 3, 5, 12.5])
def test_retrieval_training_properties(seed, percent):
    sizes = {"train": 977 + 37 * seed, "restval": 50, "val": 20, "test": 30}
    images, captions = _tables(sizes, captions=5 + seed % 3)
    train = retrieval_training(images, captions, percent, seed)
    assert len(train) == int(sizes["train"] * percent / 100 + 0.5)
    assert train["image_id"].is_unique and train["image_id"].is_monotonic_increasing
    assert set(images.set_index("image_id").loc[train["image_id"], "split"]) == {"train"}
    assert train["caption_index"].between(0, 4).all()  # one of the first five, as CPL draws
    assert (train["caption"] == "c" + train["image_id"].astype(str) + "-" + train["caption_index"].astype(str)).all()
    counts = np.bincount(train["caption_index"], minlength=5)
    assert len(train) < 40 or (counts > 0).all(), counts  # captions vary, not always the first


def test_a_fraction_below_one_image_is_refused():
    images, captions = _tables({"train": 50, "test": 5})
    with pytest.raises(ValueError, match="less than one image"):
        retrieval_training(images, captions, 0.5, seed=1)


# --- VQA: table and CPL's split ---------------------------------------------------------------


def _vqa_table(tmp_path: Path, n_images: int = 300, per_image: int = 4) -> pd.DataFrame:
    q, a = vqa_files(n_images, per_image)
    (tmp_path / "q.json").write_bytes(q)
    (tmp_path / "a.json").write_bytes(a)
    return read_vqa(tmp_path / "q.json", tmp_path / "a.json")


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


# --- bad inputs: one line naming the file and the key -----------------------------------------


def _karpathy_case(case: str) -> tuple[str, object, str]:
    images = flickr_images(3, 1, 1)
    if case == "no images key":
        return "dataset_flickr30k.json", {"dataset": "flickr30k"}, "no top-level key 'images'"
    if case == "missing sentences":
        del images[1]["sentences"]
        return "dataset_flickr30k.json", {"images": images}, "images[1] has no 'sentences'"
    if case == "empty caption list":
        images[2]["sentences"] = []
        return "dataset_flickr30k.json", {"images": images}, "images[2] (imgid 2) has an empty 'sentences' list"
    if case == "caption without raw":
        del images[0]["sentences"][3]["raw"]
        return "dataset_flickr30k.json", {"images": images}, "images[0].sentences[3] has no 'raw'"
    if case == "blank caption":
        images[0]["sentences"][1]["raw"] = "   "
        return "dataset_flickr30k.json", {"images": images}, "images[0].sentences[1] has a bad 'raw'"
    if case == "unknown split":
        images[0]["split"] = "dev"
        return "dataset_flickr30k.json", {"images": images}, "images[0] has a bad 'split' ('dev'"
    if case == "duplicate imgid":
        images[3]["imgid"] = 1
        return "dataset_flickr30k.json", {"images": images}, "duplicate 'imgid' 1"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["no images key", "missing sentences", "empty caption list", "caption without raw",
                                  "blank caption", "unknown split", "duplicate imgid"])
def test_bad_karpathy_file_is_refused_in_one_line(tmp_path, case):
    name, obj, message = _karpathy_case(case)
    path = _write(tmp_path, name, obj)
    with pytest.raises(ValueError) as err:
        read_karpathy(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value) and "\n" not in str(err.value)


def test_a_karpathy_file_that_is_not_json_is_refused(tmp_path):
    path = tmp_path / "dataset_coco.json"
    path.write_text("<html>quota exceeded</html>")
    with pytest.raises(ValueError, match=r"dataset_coco\.json: not a JSON file"):
        read_karpathy(path)


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


# --- statements -------------------------------------------------------------------------------

STATEMENTS = [
    ("Is the man holding a bat?", "yes", "the man is holding a bat."),
    ("Is the man holding a bat?", "no", "the man is not holding a bat."),
    ("Is the sky blue?", "yes", "the sky is blue."),
    ("Is the red car parked?", "no", "the red car is not parked."),
    ("Is this a kitchen?", "yes", "this is a kitchen."),
    ("Is this man happy?", "no", "this man is not happy."),
    ("Is it raining?", "yes", "it is raining."),
    ("Are there any clouds?", "no", "there are not any clouds."),
    ("Does the man have a hat?", "no", "the man does not have a hat."),
    ("Can you see the ocean?", "yes", "you can see the ocean."),
    ("What color is the cat?", "Black", "the cat is black."),
    ("What color are the walls?", "white", "the walls are white."),
    ("What colour is the man's shirt?", "blue", "the man's shirt is blue."),
    ("What color?", "red", "the color is red."),
    ("How many dogs are there?", "2", "there are 2 dogs."),
    ("How many people are in the picture?", "3", "there are 3 people in the picture."),
    ("How many people are sitting on the bench?", "1", "there is 1 people sitting on the bench."),
    ("How many players does the team have?", "11", "the number of players is 11."),
    ("What is the man holding?", "kite", "the man is holding kite."),
    ("What are the people watching?", "tv", "the people are watching tv."),
    ("What is the woman doing?", "surfing", "the woman is surfing."),
    ("What is the name of the street?", "main st", "the name of the street is main st."),
    ("Where is the cat?", "on bed", "the cat is on bed."),
    ("Where are the people?", "beach", "the people are in beach."),
    ("Which hand is he using?", "left", "left."),
    ("Who is in the photo?", "man", "man."),
    ("What sport is this?", "tennis", "tennis."),
    ("Is the man holding a bat?", "maybe", "maybe."),
]


@pytest.mark.parametrize("question, answer, expected", STATEMENTS)
def test_declarative_by_question_type(question, answer, expected):
    assert declarative(question, answer) == expected
    assert statement(question, answer) == f"{question} {expected}"


def test_statements_are_deterministic_and_refuse_an_empty_answer():
    assert [statement(q, a) for q, a, _ in STATEMENTS] == [statement(q, a) for q, a, _ in STATEMENTS]
    with pytest.raises(ValueError, match="empty answer"):
        declarative("What color is the cat?", "  ")


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
