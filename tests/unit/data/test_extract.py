"""Archive extraction (data/extract.py): malicious archives are refused and write nothing, benign
links and ``..`` inside the root are extracted, and the downloads folder is reserved."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from dicap.data.extract import safe_extract
from local_mirror import tar_bytes, zip_bytes

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
