"""The paper suite's download half, without internet: a Range-aware HTTP server on 127.0.0.1
serves small archives built here with the real layout of three datasets (OxfordPets, DTD,
EuroSAT) at the real URLs' paths, and the registry's own entries are used with the
checksums of those small archives."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import io
import logging
import os
import re
import stat
import tarfile
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from dicap.data.download import fetch, mirror_url, verify_placed
from dicap.data.extract import safe_extract
from dicap.data.paper_sources import check_registry, dataset_keys, load_registry, prepare_paper_dataset
from dicap.io import read_json
from local_mirror import LAYOUTS, SPLIT, local_registry, md5, serve, sha256, tar_bytes, zip_bytes


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


def test_fetch_skips_a_file_already_verified(server, tmp_path):
    data = b"x" * 5000
    url = serve(server, "https://example.org/a/file.bin", data)
    fetch(url, tmp_path / "file.bin", md5(data), "md5", progress=False)
    fetch(url, tmp_path / "file.bin", md5(data), "md5", progress=False)
    assert len(server.requests) == 1


@pytest.mark.parametrize("wrong", ["primary", "cross_check"])
def test_checksum_mismatch_deletes_file_and_names_url_and_both_hashes(server, tmp_path, wrong):
    data = b"the real bytes" * 1000
    url = serve(server, "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz", data)
    bad = "0" * 32 if wrong == "primary" else "f" * 64
    checksum, cross = (bad, {"sha256": sha256(data)}) if wrong == "primary" else (md5(data), {"sha256": bad})
    dest = tmp_path / "dtd-r1.0.1.tar.gz"
    with pytest.raises(ValueError) as err:
        fetch(url, dest, checksum, "md5", cross_checks=cross, progress=False)
    msg = str(err.value)
    actual = md5(data) if wrong == "primary" else sha256(data)
    assert url in msg and bad in msg and actual in msg and "\n" not in msg
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_truncated_download_resumes_with_range(server, tmp_path):
    data = os.urandom(300_000)
    url = serve(server, "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz", data)
    path = urlsplit(url).path
    server.truncate_once[path] = 123_456
    got = fetch(url, tmp_path / "images.tar.gz", md5(data), "md5", backoff=0, progress=False)
    assert got.verified and (tmp_path / "images.tar.gz").read_bytes() == data
    assert server.requests == [(path, None, 200), (path, "bytes=123456-", 206)]


def test_server_ignoring_range_still_gives_the_right_file(server, tmp_path):
    data = os.urandom(200_000)
    url = serve(server, "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip", data)
    server.ignore_range = True
    dest = tmp_path / "caltech-101.zip"
    dest.with_name(dest.name + ".part").write_bytes(b"stale bytes from another file" * 100)
    got = fetch(url, dest, sha256(data), "sha256", progress=False)
    assert got.verified and dest.read_bytes() == data
    assert server.requests == [(urlsplit(url).path, f"bytes={29 * 100}-", 200)]


def test_transient_error_is_retried_and_404_is_not(server, tmp_path):
    data = b"abc" * 100
    url = serve(server, "https://example.org/flaky.bin", data)
    server.fail_once["/flaky.bin"] = 503
    assert fetch(url, tmp_path / "flaky.bin", md5(data), "md5", backoff=0, progress=False).verified
    assert [r[2] for r in server.requests] == [503, 200]
    with pytest.raises(ConnectionError, match=re.escape(server.base + "/missing.bin") + ".*404"):
        fetch(server.base + "/missing.bin", tmp_path / "missing.bin", md5(data), "md5", backoff=0, progress=False)
    assert [r[2] for r in server.requests] == [503, 200, 404]


def test_html_page_instead_of_the_file_is_refused(server, tmp_path):
    url = serve(server, "https://drive.usercontent.google.com/download?id=abc&export=download&confirm=t",
                b"<html>Google Drive can't scan this file for viruses</html>")
    server.content_types[urlsplit(url).path + "?" + urlsplit(url).query] = "text/html; charset=utf-8"
    with pytest.raises(ValueError, match="HTML page"):
        fetch(url, tmp_path / "split_zhou_X.json", None, "sha256", progress=False)
    assert not (tmp_path / "split_zhou_X.json").exists()


def test_unverified_file_is_held_to_its_first_sha256(server, tmp_path, caplog):
    url = serve(server, "https://example.org/split.json", SPLIT)
    dest = tmp_path / "split.json"
    (tmp_path / "split.json.part").write_bytes(SPLIT[:10])  # nothing would vouch for a splice: not resumed
    with caplog.at_level(logging.WARNING, logger="dicap"):
        first = fetch(url, dest, None, "sha256", progress=False)
    assert not first.verified and "UNVERIFIED" in caplog.text
    assert server.requests == [("/split.json", None, 200)] and dest.read_bytes() == SPLIT
    assert (tmp_path / "split.json.sha256").read_text().split()[0] == sha256(SPLIT)
    dest.write_bytes(b"edited")
    with pytest.raises(ValueError, match="changed since it was first downloaded"):
        fetch(url, dest, None, "sha256", progress=False)
    assert len(server.requests) == 1


def test_mirror_replaces_scheme_and_host_only(monkeypatch):
    url = "https://drive.usercontent.google.com/download?id=1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs&export=download"
    assert mirror_url(url, "http://127.0.0.1:9/m/") == \
        "http://127.0.0.1:9/m/download?id=1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs&export=download"
    monkeypatch.setenv("DICAP_MIRROR", "http://cache:8000")
    assert mirror_url("https://www.robots.ox.ac.uk/~vgg/x.tgz") == "http://cache:8000/~vgg/x.tgz"
    monkeypatch.delenv("DICAP_MIRROR")
    assert mirror_url(url) == url


# --- malicious archives ---------------------------------------------------------------------


def _tar_with(members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for m in members:
            payload = (data or {}).get(m.name)
            if payload is not None:
                m.size = len(payload)
            tf.addfile(m, io.BytesIO(payload) if payload is not None else None)
    return buf.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def _evil_archive(case: str, tmp_path: Path) -> tuple[str, bytes, str]:
    """(file name, archive bytes, the member the error must name)."""
    ok = _info("images/fine.jpg")
    if case == "tar_dotdot":
        return "a.tar", _tar_with([ok, _info("images/../../evil")], {"images/fine.jpg": b"1", "images/../../evil": b"x"}), \
            "images/../../evil"
    if case == "tar_absolute":
        target = str(tmp_path / "abs_evil")
        return "a.tar", _tar_with([ok, _info(target)], {"images/fine.jpg": b"1", target: b"x"}), target
    if case == "tar_symlink_out":
        return "a.tar", _tar_with([ok, _info("link", tarfile.SYMTYPE, "../outside"), _info("link/evil")],
                                  {"images/fine.jpg": b"1", "link/evil": b"x"}), "link"
    if case == "tar_symlink_chain":  # each link looks inside lexically; a -> c/b/.. really is the parent
        return "a.tar", _tar_with([_info("c", tarfile.DIRTYPE), _info("c/b", tarfile.SYMTYPE, ".."),
                                   _info("a", tarfile.SYMTYPE, "c/b/.."), _info("a/evil")], {"a/evil": b"x"}), "a"
    if case == "tar_hardlink_out":
        return "a.tar", _tar_with([ok, _info("hl", tarfile.LNKTYPE, "../outside.txt")], {"images/fine.jpg": b"1"}), "hl"
    if case == "tar_fifo":
        return "a.tar", _tar_with([ok, _info("images/pipe", tarfile.FIFOTYPE)], {"images/fine.jpg": b"1"}), "images/pipe"
    if case == "tgz_dotdot":
        return "a.tar.gz", tar_bytes({"images/fine.jpg": b"1", "../evil": b"x"}), "../evil"
    if case == "zip_dotdot":
        return "a.zip", zip_bytes({"2750/fine.jpg": b"1", "../evil": b"x"}), "../evil"
    if case == "zip_symlink_out":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("2750/fine.jpg", b"1")
            info = zipfile.ZipInfo("2750/link")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "../../outside")
        return "a.zip", buf.getvalue(), "2750/link"
    raise AssertionError(case)


def _tree(root: Path) -> dict[str, bytes | str]:
    """Every path under ``root`` with its content (files), link target (links) or 'dir'."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            out[rel] = os.readlink(p) if p.is_symlink() else ("dir" if p.is_dir() else p.read_bytes())
    return out


# The reason our own check gives (tarfile's filter="data" would catch most tar cases too, but
# only as a second line of defence; these reasons show the explicit checks fired first).
EVIL = {"tar_dotdot": "'..' components", "tar_absolute": "absolute path", "tar_symlink_out": "symlink target",
        "tar_symlink_chain": "symlink target", "tar_hardlink_out": "hard link target",
        "tar_fifo": "device, fifo or other special file", "tgz_dotdot": "'..' components",
        "zip_dotdot": "'..' components", "zip_symlink_out": "symlink target"}


@pytest.mark.parametrize("existing_target", [False, True], ids=["fresh", "merge"])
@pytest.mark.parametrize("case", EVIL)
def test_malicious_archive_is_refused_and_writes_nothing(tmp_path, case, existing_target):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    name, data, member = _evil_archive(case, tmp_path)
    archive = tmp_path / name
    archive.write_bytes(data)
    target = work / "sub" / "target"
    if existing_target:
        target.mkdir()
        (target / "kept.txt").write_text("from an earlier archive")
    before = _tree(tmp_path)
    with pytest.raises(ValueError) as err:
        safe_extract(archive, target)
    msg = str(err.value)
    assert str(archive) in msg and repr(member) in msg and EVIL[case] in msg, msg
    assert _tree(tmp_path) == before  # nothing outside, no partial target, no staging dir left


def test_benign_links_and_dotdot_inside_are_extracted(tmp_path):
    archive = tmp_path / "ok.tar"
    archive.write_bytes(_tar_with([_info("a/../b.txt"), _info("lnk", tarfile.SYMTYPE, "b.txt"), _info("d", tarfile.DIRTYPE)],
                                  {"a/../b.txt": b"bee"}))
    names = safe_extract(archive, tmp_path / "out")
    assert names == ["b.txt", "d", "lnk"]
    assert (tmp_path / "out" / "lnk").read_text() == "bee"


def test_extract_into_dataset_folder_may_not_replace_downloads(tmp_path):
    archive = tmp_path / "x.zip"
    archive.write_bytes(zip_bytes({"downloads/evil.json": b"{}"}))
    (tmp_path / "ds" / "downloads").mkdir(parents=True)
    with pytest.raises(ValueError, match="downloads"):
        safe_extract(archive, tmp_path / "ds", reserved=("downloads", "READY.json"))


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


def test_verify_placed_message_is_the_instructions(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        verify_placed(tmp_path / "ILSVRC2012_devkit_t12.tar.gz", "0" * 32, "md5", "put it there")
    assert str(err.value) == "put it there"


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
