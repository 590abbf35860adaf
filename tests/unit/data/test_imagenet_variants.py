"""The domain-generalization targets' label maps (data/imagenet_variants.py): ImageNet's 1,000
wnids in index order, the 200-wnid subsets of ImageNet-A and -R inside them, each checked on
read; a target's classes numbered in ImageNet order with CoOp's names and ImageNet's index."""

from __future__ import annotations

import pytest

from dicap.data import imagenet_variants
from dicap.data.imagenet_variants import LABEL_MAPS, label_maps, read_classnames, target_classes, wnids
from local_mirror import imagenet_classnames


def test_imagenet_lists_its_1000_wnids_in_class_index_order():
    imagenet = wnids("imagenet")
    assert len(imagenet) == len(set(imagenet)) == 1000 and list(imagenet) == sorted(imagenet)
    assert imagenet[0] == "n01440764" and imagenet[999] == "n15075141"  # tench, toilet tissue


@pytest.mark.parametrize(("name", "first", "indices"), [
    # the first ImageNet indices of natural-adv-examples' thousand_k_to_200 (value != -1): 6 stingray, 11 goldfinch, ...
    ("imagenet_a", "n01498041", [6, 11, 13, 15, 17, 22, 23, 27, 30, 37]),
    ("imagenet_r", "n01443537", [1, 2, 4, 6, 8, 9, 11, 13, 22, 23]),  # goldfish, great white shark, ...
])
def test_a_and_r_are_200_distinct_imagenet_wnids_in_index_order(name, first, indices):
    subset, index = wnids(name), {w: i for i, w in enumerate(wnids("imagenet"))}
    assert len(subset) == len(set(subset)) == 200 and set(subset) <= set(index)
    positions = [index[w] for w in subset]
    assert positions == sorted(positions) and positions[:10] == indices and subset[0] == first


def test_the_two_subsets_differ():
    a, r = set(wnids("imagenet_a")), set(wnids("imagenet_r"))
    assert a != r and 0 < len(a & r) < 200


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda m: m["imagenet_a"].__setitem__(1, m["imagenet_a"][0]), "imagenet_a must list distinct ImageNet wnids"),
    (lambda m: m["imagenet_r"].__setitem__(5, "n99999999"), r"\['n99999999'\] are not ImageNet's"),
    (lambda m: m["imagenet_a"].reverse(), "imagenet_a must list distinct ImageNet wnids in index order"),
    (lambda m: m["imagenet"].pop(), "imagenet must list 1,000 distinct wnids"),
    (lambda m: m["imagenet"].reverse(), "in sorted \\(class index\\) order"),
    (lambda m: m.pop("imagenet_r"), "expected the label maps imagenet, imagenet_a, imagenet_r"),
])
def test_a_broken_label_map_file_is_refused_naming_the_list(tmp_path, monkeypatch, edit, problem):
    import yaml

    maps = {name: list(label_maps()[name]) for name in LABEL_MAPS}
    edit(maps)
    broken = tmp_path / "imagenet_labels.yaml"
    broken.write_text(yaml.safe_dump(maps))
    monkeypatch.setattr(imagenet_variants, "LABELS", broken)
    label_maps.cache_clear()
    try:
        with pytest.raises(ValueError, match=problem):
            label_maps()
    finally:
        label_maps.cache_clear()


def test_an_unknown_label_map_is_refused():
    with pytest.raises(ValueError, match=r"unknown label map 'imagenet_o'"):
        wnids("imagenet_o")


@pytest.fixture
def classnames(tmp_path):
    path = tmp_path / "classnames.txt"
    path.write_bytes(imagenet_classnames())
    return path


@pytest.mark.parametrize(("classes", "folders", "n"), [("imagenet", "index", 1000), ("imagenet", "wnid", 1000),
                                                        ("imagenet_a", "wnid", 200), ("imagenet_r", "wnid", 200)])
def test_target_classes_give_folder_name_and_imagenet_index(classnames, classes, folders, n):
    got = target_classes(classes, folders, classnames)
    assert len(got) == n and [c.wnid for c in got] == list(wnids(classes))
    imagenet = wnids("imagenet")
    for c in got:
        assert imagenet[c.imagenet_label] == c.wnid and c.name == f"thing {c.imagenet_label}"
        assert c.folder == (str(c.imagenet_label) if folders == "index" else c.wnid)


def test_coops_names_are_read_by_wnid_not_by_line(tmp_path, classnames):
    shuffled = tmp_path / "shuffled.txt"
    shuffled.write_text("\n".join(reversed(classnames.read_text().splitlines())) + "\n")
    assert target_classes("imagenet_r", "wnid", shuffled) == target_classes("imagenet_r", "wnid", classnames)


@pytest.mark.parametrize(("text", "problem"), [
    ("n01443537 goldfish\n", r"names no class for 199 of the 200 wnids of imagenet_r"),
    ("n01440764\n", r"a line without '<wnid> <name>': 'n01440764'"),
])
def test_a_classnames_file_that_is_not_coops_is_refused(tmp_path, text, problem):
    path = tmp_path / "classnames.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem):
        target_classes("imagenet_r", "wnid", path)


def test_an_unknown_folder_naming_is_refused(classnames):
    with pytest.raises(ValueError, match=r"class_folders 'name'"):
        target_classes("imagenet", "name", classnames)


def test_read_classnames_keeps_names_with_spaces(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("n01440764 tench\nn01443537 great white shark\n\n")
    assert read_classnames(path) == {"n01440764": "tench", "n01443537": "great white shark"}
