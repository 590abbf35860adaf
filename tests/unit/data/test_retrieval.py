"""The paper suite's retrieval data (data/retrieval.py), without internet: Karpathy tables and
CPL's few-shot splits, from what the local server's archives hold (local_mirror.TASK_LAYOUTS)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dicap.data.paper_sources import prepare_paper_dataset
from dicap.data.retrieval import few_shot_count, read_karpathy, retrieval_test, retrieval_training
from dicap.data.vqa import read_vqa, vqa_split
from local_mirror import coco_images, flickr_images, local_registry


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
