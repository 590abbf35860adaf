"""Where a files store's images are (data/store.py): relative to this machine's data root."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicap.data.store import files_image_root


@pytest.mark.parametrize(("info", "env", "expected"), [
    ({"image_root": "dtd/images"}, "/laptop/data", "/laptop/data/dtd/images"),
    ({"image_root": "my_birds/images/./jpg"}, "/cluster/data", "/cluster/data/my_birds/images/jpg"),
    ({"image_root": "/old/absolute/images"}, "/laptop/data", "/old/absolute/images"),  # a store from before issue 27
])
def test_the_image_root_resolves_against_this_machines_data_root(monkeypatch, info, env, expected):
    monkeypatch.setenv("DICAP_DATA_ROOT", env)
    assert files_image_root(Path("store"), info) == Path(expected)


@pytest.mark.parametrize("bad", ["../etc", "dtd/../../x"])
def test_an_image_root_that_leaves_the_data_root_is_refused(monkeypatch, bad):
    monkeypatch.setenv("DICAP_DATA_ROOT", "/data")
    with pytest.raises(ValueError, match=r"store/classes\.json: image_root .* leaves the data root; refused"):
        files_image_root(Path("store"), {"image_root": bad})


def test_a_relative_image_root_without_any_data_root_names_the_variable(monkeypatch):
    monkeypatch.delenv("DICAP_DATA_ROOT", raising=False)
    with pytest.raises(ValueError, match=r"relative to data\.root; set DICAP_DATA_ROOT"):
        files_image_root(Path("store"), {"image_root": "dtd/images"})



@pytest.mark.parametrize("table", ["table", "texts"])
def test_a_truncated_store_table_names_itself(tmp_path, table):
    """The store's tables go through dicap.io: the job removes the damaged file and says what rebuilds it."""
    import shutil

    from dicap.data import embedded
    from dicap.data.store import TABLE, TEXTS, DatasetStore
    from helpers import SIZES, assert_corrupt, truncated_table

    root = tmp_path / "data"
    embedded.build("shapes", SIZES, 0, root)
    store = DatasetStore.open(root)
    if table == "table":
        truncated_table(root / TABLE)
        assert_corrupt(root / TABLE, DatasetStore.open, root)
    else:
        shutil.copy(root / TABLE, root / TEXTS)  # any table stands for the captions here
        truncated_table(root / TEXTS)
        assert_corrupt(root / TEXTS, lambda: store.texts)


@pytest.mark.parametrize(("extra", "evaluation_only", "imagenet_labels"), [
    ({}, False, None),  # a base-to-novel dataset's store, and every store from before issue 28
    ({"evaluation_only": True, "label_map": "imagenet_r", "imagenet_labels": [1, 2]}, True, [1, 2]),
])
def test_a_files_store_says_whether_it_is_a_test_only_target(tmp_path, monkeypatch, extra, evaluation_only, imagenet_labels):
    import pandas as pd

    from dicap.data.store import CLASSES, TABLE, DatasetStore
    from dicap.io import write_json, write_table

    monkeypatch.setenv("DICAP_DATA_ROOT", str(tmp_path))
    write_table(tmp_path / TABLE, pd.DataFrame({"split": ["test"] * 2, "index": [0, 1], "label": [0, 1],
                                                "class_name": ["goldfish", "shark"], "path": ["a/1.jpg", "b/2.jpg"]}))
    write_json(tmp_path / CLASSES, {"classes": ["goldfish", "shark"], "dataset": "imagenet_r", "storage": "files",
                                    "image_root": "imagenet_r/imagenet-r", "image_size": 8, **extra})
    store = DatasetStore.open(tmp_path)
    assert (store.evaluation_only, store.imagenet_labels, store.test_splits) == (evaluation_only, imagenet_labels, ["test"])


@pytest.mark.parametrize(("declared", "expected"), [
    (None, ["test_unbiased", "test_backgrounds"]),  # every store from before the shift store: the fixed splits
    (["test_backgrounds"], ["test_backgrounds"]),
    (["val", "test_unbiased"], ["val", "test_unbiased"]),  # in the order classes.json lists them
])
def test_the_test_splits_are_those_classes_json_lists_and_transfer_scores_a_datasets_unbiased_one(tmp_path, declared, expected):
    from dicap.data import embedded
    from dicap.data.store import CLASSES, DatasetStore
    from dicap.io import read_json, write_json
    from helpers import SIZES

    embedded.build("shapes", SIZES, 0, tmp_path / "data")
    info = read_json(tmp_path / "data" / CLASSES)
    if declared is not None:
        write_json(tmp_path / "data" / CLASSES, {**info, "test_splits": declared})
    store = DatasetStore.open(tmp_path / "data")
    assert store.test_splits == expected
    # transfer: a shift store's every split, each its own column; a dataset's unbiased split, under the target's name
    assert store.transfer_splits == (expected if declared else ["test_unbiased"])
    assert [store.transfer_domain(s, "shapes") for s in store.transfer_splits] == (expected if declared else ["shapes"])


def test_a_listed_test_split_the_table_lacks_is_refused(tmp_path):
    from dicap.data import embedded
    from dicap.data.store import CLASSES, DatasetStore
    from dicap.io import read_json, write_json
    from helpers import SIZES

    embedded.build("shapes", SIZES, 0, tmp_path)
    write_json(tmp_path / CLASSES, {**read_json(tmp_path / CLASSES), "test_splits": ["test_unbiased", "blur"]})
    with pytest.raises(ValueError, match=r"classes\.json lists test split 'blur', which .*factors\.parquet does not have"):
        DatasetStore.open(tmp_path)
