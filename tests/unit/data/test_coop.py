"""A dataset placed by hand (folder tree, split file, registry entry) cannot make a job read
outside its root: a path or link that resolves elsewhere is refused, naming the path."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from dicap.data.coop import build_store
from dicap.data.store import DatasetStore


def _jpeg(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


@pytest.fixture
def tree(tmp_path) -> tuple[Path, Path]:
    """``<root>/dtd/images/<class>/*.jpg`` and a file outside the dataset a link could reach."""
    dataset = tmp_path / "root" / "dtd"
    for c in ("banded", "woven"):
        for i in range(3):
            _jpeg(dataset / "images" / c / f"{i}.jpg", 40 * i)
    secret = tmp_path / "elsewhere" / "secret.jpg"
    _jpeg(secret, 255)
    return dataset, secret


ENTRY = {"key": "dtd", "image_root": "images", "split_file": None}


@pytest.fixture(autouse=True)
def data_root(tmp_path, monkeypatch):
    """What rules/data.smk gives every job: this machine's data.root, where stores' image roots start."""
    monkeypatch.setenv("DICAP_DATA_ROOT", str(tmp_path / "root"))


def test_a_clean_folder_tree_builds(tree, tmp_path):
    dataset, _ = tree
    table = build_store(ENTRY, dataset, 8, tmp_path / "store")
    assert len(table) == 6
    store = DatasetStore.open(tmp_path / "store")
    assert store.pixels(store.table).shape == (6, 8, 8, 3)


def test_a_linked_image_outside_the_root_is_refused(tree, tmp_path):
    dataset, secret = tree
    (dataset / "images" / "woven" / "3.jpg").symlink_to(secret)
    with pytest.raises(ValueError, match=r"'woven/3.jpg' resolves to .*secret\.jpg, outside the dataset root .*images"):
        build_store(ENTRY, dataset, 8, tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_a_linked_class_folder_outside_the_root_is_refused(tree, tmp_path):
    dataset, secret = tree
    (dataset / "images" / "stolen").symlink_to(secret.parent, target_is_directory=True)
    with pytest.raises(ValueError, match=r"'stolen/secret.jpg' resolves to .*elsewhere/secret\.jpg, outside"):
        build_store(ENTRY, dataset, 8, tmp_path / "store")


def test_an_image_root_that_is_a_link_outside_is_refused(tree, tmp_path):
    dataset, secret = tree
    (dataset / "linked").symlink_to(secret.parent, target_is_directory=True)
    with pytest.raises(ValueError, match=r"registry entry dtd: image_root 'linked' resolves to .*elsewhere, outside"):
        build_store({**ENTRY, "image_root": "linked"}, dataset, 8, tmp_path / "store")


@pytest.mark.parametrize("bad", ["../../elsewhere/secret.jpg", "ABSOLUTE"])
def test_a_split_file_naming_a_path_outside_is_refused(tree, tmp_path, bad):
    dataset, secret = tree
    bad = str(secret) if bad == "ABSOLUTE" else bad
    split = {"train": [["banded/0.jpg", 0, "banded"], [bad, 1, "woven"]], "val": [["banded/1.jpg", 0, "banded"]],
             "test": [["woven/0.jpg", 1, "woven"]]}
    (dataset / "downloads").mkdir()
    (dataset / "downloads" / "split.json").write_text(json.dumps(split))
    with pytest.raises(ValueError, match=rf"image named by the split of dtd {re.escape(repr(bad))} resolves to .*secret\.jpg, outside"):
        build_store({**ENTRY, "split_file": "split.json"}, dataset, 8, tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_a_registry_split_file_outside_downloads_is_refused(tree, tmp_path):
    dataset, _ = tree
    with pytest.raises(ValueError, match=r"registry entry dtd: split_file '\.\./\.\./x\.json' resolves to .*, outside"):
        build_store({**ENTRY, "split_file": "../../x.json"}, dataset, 8, tmp_path / "store")


def test_a_hand_edited_store_table_cannot_read_outside(tree, tmp_path):
    dataset, secret = tree
    build_store(ENTRY, dataset, 8, tmp_path / "store")
    store = DatasetStore.open(tmp_path / "store")
    rows = store.table.head(1).assign(path=os.path.relpath(secret, dataset / "images"))
    with pytest.raises(ValueError, match=r"image of dataset store .* resolves to .*secret\.jpg, outside"):
        store.pixels(rows)


# --- image roots relative to data.root (issue 27): a store moved to another machine resolves -------


def test_the_store_records_its_image_root_relative_to_the_data_root(tree, tmp_path, monkeypatch):
    dataset, _ = tree
    build_store(ENTRY, dataset, 8, tmp_path / "store")
    info = json.loads((tmp_path / "store" / "classes.json").read_text())
    assert info["image_root"] == "dtd/images" and str(tmp_path) not in json.dumps(info)  # no absolute path
    # the data root moves (another machine): the store follows DICAP_DATA_ROOT, not the path it was built with
    moved = tmp_path / "laptop" / "data"
    moved.parent.mkdir()
    os.rename(dataset.parent, moved)
    monkeypatch.setenv("DICAP_DATA_ROOT", str(moved))
    store = DatasetStore.open(tmp_path / "store")
    assert store.image_root == moved / "dtd" / "images"
    assert store.pixels(store.table).shape == (6, 8, 8, 3)


def test_an_undeclared_link_as_the_dataset_folder_is_refused(tree, tmp_path):
    dataset, _ = tree
    (tmp_path / "root2").mkdir()
    (tmp_path / "root2" / "dtd").symlink_to(dataset, target_is_directory=True)
    with pytest.raises(ValueError, match=r"root2/dtd is a link to .* that registry entry dtd does not declare"):
        build_store(ENTRY, tmp_path / "root2" / "dtd", 8, tmp_path / "store")
    table = build_store({**ENTRY, "link": str(dataset)}, tmp_path / "root2" / "dtd", 8, tmp_path / "store")
    assert len(table) == 6
    assert json.loads((tmp_path / "store" / "classes.json").read_text())["image_root"] == "dtd/images"


def test_a_local_entry_reads_its_split_beside_the_images(tmp_path):
    from local_mirror import coop_folder, local_entry

    _, n = coop_folder(tmp_path / "root" / "mine", ["a", "b"], {"train": 1, "val": 1, "test": 1})
    table = build_store({"key": "mine", **local_entry(n)}, tmp_path / "root" / "mine", 8, tmp_path / "store")
    assert table.groupby("split").size().to_dict() == {"test": 2, "train": 2, "val": 2}


# --- the domain-generalization targets (issue 28): test only, labelled by the entry's label map -------


@pytest.fixture
def target(server, tmp_path):
    """prepare(key) -> (registry entry with its key, dataset folder): one target downloaded from the local mirror."""
    from dicap.data.paper_sources import prepare_paper_dataset
    from local_mirror import local_registry

    def prepare(key: str) -> tuple[dict, Path]:
        reg = local_registry(server, [key])
        prepare_paper_dataset(key, tmp_path / "root", reg, base_url=server.base, progress=False)
        return {"key": key, **reg["datasets"][key]}, tmp_path / "root" / key

    return prepare


@pytest.mark.parametrize(("key", "n_classes", "first_imagenet_label"), [
    ("imagenet_v2", 1000, 0), ("imagenet_sketch", 1000, 0), ("imagenet_a", 200, 6), ("imagenet_r", 200, 1)])
def test_a_target_becomes_a_test_only_store_of_its_imagenet_classes(target, tmp_path, key, n_classes, first_imagenet_label):
    from dicap.data.imagenet_variants import wnids
    from local_mirror import DG_EXTRA, DG_TARGETS

    entry, dataset = target(key)
    table = build_store(entry, dataset, 8, tmp_path / "store")
    assert set(table["split"]) == {"test"} and len(table) == n_classes + DG_EXTRA
    assert sorted(set(table["label"])) == list(range(n_classes))
    store = DatasetStore.open(tmp_path / "store")
    assert store.test_splits == ["test"] and store.evaluation_only and len(store.classes) == n_classes
    info = json.loads((tmp_path / "store" / "classes.json").read_text())
    assert info["image_root"] == f"{key}/{DG_TARGETS[key][1]}" and info["label_map"] == entry["classes"]
    imagenet = wnids("imagenet")
    assert store.imagenet_labels[0] == first_imagenet_label and len(set(store.imagenet_labels)) == n_classes
    assert [imagenet[i] for i in store.imagenet_labels] == info["wnids"] == list(wnids(entry["classes"]))
    # each row: its folder is its class's (a wnid, or V2's ImageNet index), its name CoOp's for that ImageNet class
    for row in table.itertuples():
        folder, imagenet_label = row.path.split("/")[0], store.imagenet_labels[row.label]
        assert folder == (str(imagenet_label) if entry["class_folders"] == "index" else imagenet[imagenet_label])
        assert row.class_name == store.classes[row.label] == f"thing {imagenet_label}"
    assert store.pixels(table.head(3)).shape == (3, 8, 8, 3)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda root: (root / "n99999999").mkdir(), r"1 not in it, e\.g\. \['n99999999'\]; 0 of its classes missing"),
    (lambda root: shutil.rmtree(root / "n01443537"), r"0 not in it, e\.g\. \[\]; 1 of its classes missing, e\.g\. \['n01443537'\]"),
])
def test_class_folders_that_do_not_match_the_label_map_are_refused(target, tmp_path, damage, message):
    entry, dataset = target("imagenet_r")
    damage(dataset / "imagenet-r")
    with pytest.raises(ValueError, match=r"imagenet-r: the class folders do not match label map 'imagenet_r' of registry "
                                         rf"entry imagenet_r \({message}"):
        build_store(entry, dataset, 8, tmp_path / "store")


def test_a_target_read_with_another_targets_label_map_is_refused(target, tmp_path):
    entry, dataset = target("imagenet_r")
    with pytest.raises(ValueError, match=r"do not match label map 'imagenet_a' .* \(1\d\d not in it"):
        build_store({**entry, "classes": "imagenet_a"}, dataset, 8, tmp_path / "store")
