"""The paper suite's dataset registry and preparation (data/paper_sources.py), without internet:
the registry's own entries, downloaded from a local server (local_mirror.py) with the real
layouts and the checksums of those small archives, extracted and marked READY; the registry's
checksums sourced and checked; a file name that leaves the downloads folder refused."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from PIL import Image

from dicap.data.paper_sources import check_registry, dataset_keys, evaluation_targets, load_registry, prepare_paper_dataset
from dicap.io import read_json
from local_mirror import LAYOUTS, SPLIT, TASK_LAYOUTS, coop_folder, dg_layouts, local_entry, local_registry, serve, sha256, zip_bytes


def test_a_registry_file_name_that_leaves_downloads_is_refused(tmp_path):
    entry = {"name": "Evil", "image_root": "images", "split_file": None, "extract": [],
             "files": [{"filename": "../../outside.zip", "url": "https://example.org/x.zip", "algorithm": "sha256",
                        "checksum": "0" * 64, "checksum_source": "test"}]}
    with pytest.raises(ValueError, match=r"registry entry evil: file name '\.\./\.\./outside\.zip' is not a plain file name"):
        prepare_paper_dataset("evil", tmp_path, {"datasets": {"evil": entry}}, progress=False)
    assert not (tmp_path / "outside.zip").exists()
    problems = check_registry({"datasets": {"evil": {**entry, "image_root": "../up",
                                                     "extract": [{"archive": "/abs.zip", "into": "."}]}}})
    assert any("not a plain name" in p for p in problems)
    assert any("image_root '../up' leaves the dataset folder" in p for p in problems)
    assert any("extract[0].archive '/abs.zip' leaves the dataset folder" in p for p in problems)


# --- prepare: download, verify, extract, READY -----------------------------------------------


@pytest.mark.parametrize("key", sorted(LAYOUTS))
def test_prepare_gives_real_layout_and_rerun_makes_no_request(server, tmp_path, caplog, key):
    reg = local_registry(server, [key])
    with caplog.at_level(logging.WARNING, logger="dicap"):
        record = prepare_paper_dataset(key, tmp_path, reg, base_url=server.base, progress=False)
    dataset = tmp_path / key
    for rel in LAYOUTS[key][1]:
        assert (dataset / rel).is_file(), rel
        if rel.endswith(".jpg"):
            assert Image.open(dataset / rel).size == (4, 4)
    assert (dataset / reg["datasets"][key]["image_root"]).is_dir()
    ready = read_json(dataset / "READY.json")
    assert ready == record and ready["key"] == key
    split = reg["datasets"][key]["split_file"]
    assert ready["split_file"] == split and (dataset / ready["split_path"]).read_bytes() == SPLIT
    # every file is listed with the hash it was verified by; the split (no published checksum) is flagged
    by_name = {f["filename"]: f for f in ready["files"]}
    for name, data in LAYOUTS[key][0].items():
        assert by_name[name]["sha256"] == sha256(data)
        assert by_name[name]["verified"] is (name != split)
    assert ready["unverified"] == [split]
    assert (dataset / "downloads" / f"{split}.sha256").read_text().split()[0] == sha256(SPLIT)
    assert any("UNVERIFIED" in r.getMessage() and split in r.getMessage() for r in caplog.records)
    assert not list(dataset.glob("downloads/*.part")) and not list(tmp_path.glob(".*"))

    n_requests = len(server.requests)
    assert n_requests == len(LAYOUTS[key][0])
    image, ready_file = dataset / LAYOUTS[key][1][0], dataset / "READY.json"
    before = (image.stat().st_ino, ready_file.stat().st_ino, ready_file.stat().st_mtime_ns)
    again = prepare_paper_dataset(key, tmp_path, reg, base_url=server.base, progress=False)
    assert again == record
    assert len(server.requests) == n_requests, "a rerun after success must not touch the network"
    assert (image.stat().st_ino, ready_file.stat().st_ino, ready_file.stat().st_mtime_ns) == before, \
        "a rerun after success must not extract or rewrite anything"


# --- manual datasets (ImageNet) --------------------------------------------------------------


def test_manual_dataset_needs_placed_files_with_the_right_checksum(server, tmp_path):
    real = load_registry()
    entry = copy.deepcopy(real["datasets"]["imagenet"])
    placed = {f["filename"]: f"fake {f['filename']}".encode() for f in entry["files"] if f.get("manual")}
    for f in entry["files"]:
        if f.get("manual"):
            f["checksum"] = hashlib.new(f["algorithm"], placed[f["filename"]]).hexdigest()
            f.pop("cross_checks", None)
        else:
            serve(server, f["url"], b"n01440764 tench\n")
    reg = {"version": 1, "datasets": {"imagenet": entry}}
    downloads = tmp_path / "imagenet" / "downloads"
    expected = real["datasets"]["imagenet"]["instructions"].format(downloads=downloads, dataset=tmp_path / "imagenet")

    with pytest.raises(FileNotFoundError) as err:
        prepare_paper_dataset("imagenet", tmp_path, reg, base_url=server.base, progress=False)
    assert str(err.value) == expected
    assert "ILSVRC2012_img_train.tar" in str(err.value) and str(downloads) in str(err.value)
    assert server.requests == []  # refused before downloading anything

    downloads.mkdir(parents=True)
    for name, data in placed.items():
        (downloads / name).write_bytes(data)
    (downloads / "ILSVRC2012_img_val.tar").write_bytes(b"a different file")
    with pytest.raises(ValueError, match=r"ILSVRC2012_img_val\.tar is not the expected file"):
        prepare_paper_dataset("imagenet", tmp_path, reg, base_url=server.base, progress=False)
    assert (downloads / "ILSVRC2012_img_val.tar").read_bytes() == b"a different file"  # the user's copy is kept
    assert not (tmp_path / "imagenet" / "READY.json").exists()

    (downloads / "ILSVRC2012_img_val.tar").write_bytes(placed["ILSVRC2012_img_val.tar"])
    with pytest.raises(FileNotFoundError, match="images does not exist"):  # archives fine, layout not done yet
        prepare_paper_dataset("imagenet", tmp_path, reg, base_url=server.base, progress=False)
    (tmp_path / "imagenet" / "images" / "train" / "n01440764").mkdir(parents=True)
    ready = prepare_paper_dataset("imagenet", tmp_path, reg, base_url=server.base, progress=False)
    assert ready["unverified"] == ["classnames.txt"]
    assert all(f["verified"] for f in ready["files"] if f["manual"])


# --- the registry itself ---------------------------------------------------------------------

BENCHMARK = {"imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
             "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101"}
SPLITS = {"caltech101": "split_zhou_Caltech101.json", "oxford_pets": "split_zhou_OxfordPets.json",
          "stanford_cars": "split_zhou_StanfordCars.json", "oxford_flowers": "split_zhou_OxfordFlowers.json",
          "food101": "split_zhou_Food101.json", "sun397": "split_zhou_SUN397.json",
          "dtd": "split_zhou_DescribableTextures.json", "eurosat": "split_zhou_EuroSAT.json",
          "ucf101": "split_zhou_UCF101.json", "imagenet": None, "fgvc_aircraft": None}


def test_registry_lists_the_benchmark_with_sourced_checksums():
    reg = load_registry()
    assert set(dataset_keys(reg, "classification")) == BENCHMARK  # retrieval and VQA: test_paper_tasks.py
    assert check_registry(reg) == []
    for key in BENCHMARK:
        entry = reg["datasets"][key]
        assert entry["split_file"] == SPLITS[key]
        for f in entry["files"]:
            assert urlsplit(f["url"]).scheme in ("http", "https") and urlsplit(f["url"]).netloc
            assert (f["checksum"] and f["checksum_source"]) or (f["checksum"] is None and f["checksum_note"])
    assert reg["datasets"]["imagenet"]["manual"] and reg["datasets"]["stanford_cars"]["manual"]


def test_check_registry_catches_an_unsourced_or_malformed_checksum():
    reg = copy.deepcopy(load_registry())
    del reg["datasets"]["dtd"]["files"][0]["checksum_source"]
    reg["datasets"]["eurosat"]["files"][1].pop("checksum_note")
    reg["datasets"]["food101"]["files"][0]["checksum"] = "85eeb15f"
    problems = check_registry(reg)
    assert len(problems) == 3 and {p.split("/")[0] for p in problems} == {"dtd", "eurosat", "food101"}


def test_registry_refuses_duplicate_keys(tmp_path):
    path = tmp_path / "reg.yaml"
    path.write_text("datasets:\n  dtd: {files: []}\n  dtd: {files: []}\n")
    with pytest.raises(ValueError, match="duplicate key 'dtd'"):
        load_registry(path)


def test_registry_torchvision_md5s_match_installed_source():
    """Every checksum credited to torchvision must literally appear in the cited file of the
    installed torchvision (the pinned 0.29.1): a typo or an invented value fails here."""
    from importlib import metadata

    assert metadata.version("torchvision") == "0.29.1"
    site = Path(importlib.util.find_spec("torchvision").origin).parent.parent
    checked = 0
    for entry in load_registry()["datasets"].values():
        for f in entry["files"]:
            source = f.get("checksum_source") or ""
            if source.startswith("torchvision 0.29.1 "):
                cited = site / source.split()[2]
                assert f["checksum"] in cited.read_text(), (f["filename"], cited)
                checked += 1
    assert checked == 12


# --- the text tasks' datasets (Flickr30k, MSCOCO, VQAv2): registry entries ------------------------


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


# --- the text tasks' datasets: download, extract, READY -------------------------------------------


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


# --- local folders: a dataset already on disk, nothing downloaded (issue 27) -------------------

CLASSES = ["heron", "ibis", "stork"]
PER_SPLIT = {"train": 2, "val": 1, "test": 2}


@pytest.fixture
def placed(tmp_path) -> tuple[Path, str, int]:
    """A CoOp-layout folder at ``<root>/my_birds``; its split's sha256 and image count."""
    digest, n = coop_folder(tmp_path / "root" / "my_birds", CLASSES, PER_SPLIT)
    return tmp_path / "root", digest, n


@pytest.mark.parametrize("pinned", [True, False])
def test_a_local_folder_is_verified_without_downloads(placed, caplog, pinned):
    root, digest, n = placed
    reg = {"datasets": {"my_birds": local_entry(n, digest if pinned else None)}}
    assert check_registry(reg) == []
    with caplog.at_level(logging.INFO, logger="dicap"):
        record = prepare_paper_dataset("my_birds", root, reg, base_url="http://127.0.0.1:9/none", progress=False)
    assert record == read_json(root / "my_birds" / "READY.json")
    assert record["local"] is True and record["images"] == n == 15 and record["files"] == []
    assert record["split_sha256"] == digest and record["unverified"] == ([] if pinned else ["split_zhou_MyDataset.json"])
    assert not (root / "my_birds" / "downloads").exists()


@pytest.mark.parametrize(("change", "message"), [
    (lambda d, e: e.update(images=e["images"] + 1), r"the split names 15 images, the registry says images: 16"),
    (lambda d, e: e.update(images=3), r"the split names 15 images, the registry says images: 3"),
    (lambda d, e: (d / "images" / "ibis" / "ibis_0002.jpg").unlink(), r"1 of the 15 images the split names are missing .*ibis_0002"),
    (lambda d, e: [p.unlink() for p in (d / "images" / "stork").iterdir()], r"5 of the 15 images the split names are missing"),
    (lambda d, e: e.update(split_sha256="0" * 64), r"has sha256 [0-9a-f]{64}, the registry says 0{64}; refused"),
    (lambda d, e: (d / "split_zhou_MyDataset.json").unlink(), r"split_file .*split_zhou_MyDataset\.json does not exist"),
    (lambda d, e: e.update(image_root="pictures"), r"image_root .*pictures is not a folder"),
])
def test_a_local_folder_that_does_not_match_its_entry_is_refused(placed, change, message):
    root, digest, n = placed
    entry = local_entry(n, digest)
    change(root / "my_birds", entry)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        prepare_paper_dataset("my_birds", root, {"datasets": {"my_birds": entry}}, progress=False)
    assert not (root / "my_birds" / "READY.json").exists()


@pytest.mark.parametrize("bad", ["../../elsewhere/x.jpg", "/etc/passwd", "heron/../../../x.jpg"])
def test_a_local_split_naming_a_path_outside_is_refused(placed, bad):
    root, _, n = placed
    split = root / "my_birds" / "split_zhou_MyDataset.json"
    data = json.loads(split.read_text())
    data["test"][0][0] = bad
    split.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"image named by the split of my_birds .* outside the dataset root"):
        prepare_paper_dataset("my_birds", root, {"datasets": {"my_birds": local_entry(n)}}, progress=False)


@pytest.mark.parametrize(("change", "problem"), [
    ({"image_root": "../other"}, "image_root '../other' leaves the dataset folder"),
    ({"image_root": "/data/birds"}, "image_root '/data/birds' leaves the dataset folder"),
    ({"split_file": "../split.json"}, "split_file '../split.json' leaves the dataset folder"),
    ({"split_file": None}, "no split_file and no split_note"),
    ({"split_sha256": "ABC"}, "split_sha256 'ABC' is not a lowercase sha256 hex digest"),
    ({"images": 0}, "images must be the number of images the split names"),
    ({"images": "many"}, "images must be the number of images the split names"),
    ({"image_rot": "images"}, "unknown key 'image_rot' for a local entry"),
    ({"local": "yes"}, "local must be true or absent"),
    ({"task": "retrieval"}, "a local entry is a classification dataset"),
    ({"link": ""}, "link must be a folder path"),
])
def test_a_bad_local_entry_is_refused_where_the_registry_enters(tmp_path, change, problem):
    entry = {**local_entry(5), **change}
    assert any(problem in p for p in check_registry({"datasets": {"my_birds": entry}}))
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"datasets": {"my_birds": entry}}))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: registry entry my_birds: .*{re.escape(problem)}"):
        load_registry(path)


@pytest.mark.parametrize("key", ["../up", "a/b", ".hidden", "", "my birds", "x;rm"])
def test_a_dataset_key_that_is_no_plain_name_is_refused(tmp_path, key):
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"datasets": {key: local_entry(5)}}))
    with pytest.raises(ValueError, match=r"dataset key .* is not a plain name"):
        load_registry(path)
    assert any("is not a plain name" in p for p in check_registry({"datasets": {key: local_entry(5)}}))


@pytest.mark.parametrize(("relative", "snakemake_made_it"), [(True, False), (False, False), (False, True)])
def test_a_declared_link_is_made_and_followed(placed, tmp_path, relative, snakemake_made_it):
    """CoOp's $DATA tree as it is: ``<data.root>/my_birds`` links to the folder the entry declares
    (also where Snakemake has already made it an empty folder, for the job's READY.json)."""
    shared, digest, n = placed
    root = tmp_path / "data_root"
    (root / "my_birds" if snakemake_made_it else root).mkdir(parents=True)
    target = os.path.relpath(shared / "my_birds", root) if relative else str(shared / "my_birds")
    reg = {"datasets": {"my_birds": local_entry(n, digest, link=target)}}
    record = prepare_paper_dataset("my_birds", root, reg, progress=False)
    assert (root / "my_birds").is_symlink() and (root / "my_birds").resolve() == (shared / "my_birds").resolve()
    assert record["images"] == n and (shared / "my_birds" / "READY.json").is_file()
    assert prepare_paper_dataset("my_birds", root, reg, progress=False)["images"] == n  # an existing, matching link


@pytest.mark.parametrize("situation", ["undeclared", "elsewhere", "a folder", "missing target"])
def test_an_undeclared_or_mismatched_link_is_refused(placed, tmp_path, situation):
    shared, digest, n = placed
    root = tmp_path / "data_root"
    root.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    entry = local_entry(n, digest, link=str(shared / "my_birds"))
    if situation == "undeclared":
        (root / "my_birds").symlink_to(shared / "my_birds", target_is_directory=True)
        entry.pop("link")
        message = r"is a link to .* that registry entry my_birds does not declare"
    elif situation == "elsewhere":
        (root / "my_birds").symlink_to(other, target_is_directory=True)
        message = r"links to .*other, but registry entry my_birds declares link"
    elif situation == "a folder":  # a folder with something in it is never replaced
        (root / "my_birds").mkdir()
        (root / "my_birds" / "notes.txt").write_text("mine")
        message = r"declares link .*, but .*my_birds is a folder"
    else:
        entry["link"] = str(tmp_path / "nowhere")
        message = r"link .*nowhere.* is not an existing folder"
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        prepare_paper_dataset("my_birds", root, {"datasets": {"my_birds": entry}}, progress=False)
    assert not (other / "READY.json").exists()


@pytest.mark.parametrize("env", [None, "registry.yaml", "/abs/site.yaml"])
def test_the_data_layer_reads_the_registry_the_config_checks(tmp_path, monkeypatch, env):
    from dicap.config import registry_file
    from dicap.data.paper_sources import registry_path

    monkeypatch.chdir(tmp_path)
    if env is None:
        monkeypatch.delenv("DICAP_REGISTRY", raising=False)
    else:
        monkeypatch.setenv("DICAP_REGISTRY", env)
    assert registry_path() == registry_file() and registry_path().is_absolute()
    assert registry_path(tmp_path / "given.yaml") == tmp_path / "given.yaml"


# --- the domain-generalization targets (ImageNet-V2, -Sketch, -A, -R): test-only, ImageNet's classes ---


DG = {"imagenet_v2": ("imagenet", "index"), "imagenet_sketch": ("imagenet", "wnid"),
      "imagenet_a": ("imagenet_a", "wnid"), "imagenet_r": ("imagenet_r", "wnid")}


def test_registry_lists_the_four_targets_with_tfds_checksums():
    reg = load_registry()
    assert check_registry(reg) == [] and evaluation_targets(reg) == list(DG)
    assert not set(DG) & set(dataset_keys(reg, "classification"))  # no base-to-novel dataset: nothing to train on
    for key, (classes, folders) in DG.items():
        entry = reg["datasets"][key]
        assert entry["evaluation_only"] is True and (entry["classes"], entry["class_folders"]) == (classes, folders)
        assert entry["split_file"] is None and not entry.get("manual")
        archive, names = entry["files"][0], entry["files"][1]
        assert archive["algorithm"] == "sha256" and archive["size"] > 10**8
        assert archive["checksum_source"].startswith("tensorflow/datasets@") and archive["checksum_source"].endswith(
            f"tensorflow_datasets/datasets/{key}/checksums.tsv" + (" (recorded for the drive.google.com/u/0/uc?id=... form "
                                                                  "of this file id)" if key == "imagenet_sketch" else ""))
        assert names == reg["datasets"]["imagenet"]["files"][-1]  # CoOp's classnames.txt, the same file as ImageNet's


_DROP = object()  # a key _dg_entry leaves out


def _dg_entry(**change):
    """The real imagenet_a entry with ``change`` applied."""
    entry = copy.deepcopy(load_registry()["datasets"]["imagenet_a"])
    entry.update(change)
    return {k: v for k, v in entry.items() if v is not _DROP}


@pytest.mark.parametrize(("entry", "problem"), [
    (_dg_entry(evaluation_only="yes"), "evaluation_only must be true or absent, got 'yes'"),
    (_dg_entry(evaluation_only=1), "evaluation_only must be true or absent, got 1"),
    (_dg_entry(evaluation_only=False), "evaluation_only must be true or absent, got False"),
    (_dg_entry(classes="imagenet_o"), "classes 'imagenet_o' is not a label map (one of imagenet, imagenet_a, imagenet_r)"),
    (_dg_entry(classes=None), "classes None is not a label map"),
    (_dg_entry(classes=["imagenet_a"]), "classes ['imagenet_a'] is not a label map"),
    (_dg_entry(classes=_DROP), "classes None is not a label map"),
    (_dg_entry(class_folders="name"), "class_folders 'name' must be one of wnid, index"),
    (_dg_entry(class_folders=0), "class_folders 0 must be one of wnid, index"),
    (_dg_entry(split_file="imagenet-a.tar"), "an evaluation_only entry has no split_file (every image is test)"),
    (_dg_entry(task="retrieval", annotations={"captions": "x.json"}), "an evaluation_only entry is a classification target"),
    (_dg_entry(files=_dg_entry()["files"][:1]), "an evaluation_only entry needs classnames.txt (CoOp's class names) among its files"),
    (_dg_entry(evaluation_only=_DROP), "classes is only for an evaluation_only entry"),
    (_dg_entry(evaluation_only=_DROP, classes=_DROP), "class_folders is only for an evaluation_only entry"),
])
def test_a_bad_evaluation_only_entry_is_refused_where_the_registry_enters(tmp_path, entry, problem):
    assert any(problem in p for p in check_registry({"datasets": {"imagenet_a": entry}}))
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"datasets": {"imagenet_a": entry}}))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: registry entry imagenet_a: {re.escape(problem)}"):
        load_registry(path)


@pytest.mark.parametrize("key", list(DG))
def test_prepare_a_target_from_the_local_server_gives_its_real_layout(server, tmp_path, key):
    reg = local_registry(server, [key])
    record = prepare_paper_dataset(key, tmp_path, reg, base_url=server.base, progress=False)
    dataset = tmp_path / key
    for rel in dg_layouts()[key][1]:
        assert (dataset / rel).is_file(), rel
    assert record["image_root"] == reg["datasets"][key]["image_root"] and record["split_file"] is None
    assert record["unverified"] == ["classnames.txt"]  # CoOp's Drive file: no published checksum, sha256 recorded
    assert (dataset / "downloads" / "classnames.txt").is_file()
