"""Extract .tar, .tar.gz/.tgz and .zip archives without trusting their member names.

The archives come from third-party hosts (and may come from a user's mirror), so a member
named ``../../.bashrc``, ``/etc/cron.d/x``, a symlink to ``/`` followed by a file written
through it, or a device node must never reach the disk.  Every member is checked *before* it
is written, with one clear error (``ValueError`` naming the archive and the member) instead of
the silent renaming zipfile does or the warnings older tarfiles print:

* absolute names and names whose ``..`` climb out of the target are refused;
* symlinks and hard links must point inside the target; a member may not be written through
  a symlink of the same archive, nor may a link target pass through one (the classic
  ``a -> b/..`` chain that looks inside lexically but is not);
* device, fifo and other special members are refused.

Extraction goes into a temporary directory beside the target, and only once every member has
passed is it renamed into place (a fresh target) or its top-level entries moved in (a target
that already holds other archives' contents, as a dataset folder does).  A bad archive thus
leaves nothing behind: no file outside the target, no half-extracted target.  As a second line
of defence tar members go through Python's ``filter="data"`` and, after extraction, every
symlink's real path is checked to stay inside.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Collection, Iterator
from pathlib import Path

from dicap.io import atomic_dir

CHUNK = 1 << 20
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def archive_format(path: str | os.PathLike, declared: str | None = None) -> str:
    """"tar" or "zip" for ``path``: from ``declared`` (a registry step's ``format``; "tar.gz"
    counts as tar), else from the file name."""
    name = (declared or Path(path).name).lower()
    if name == "zip" or name.endswith(".zip"):
        return "zip"
    if name in ("tar", "tar.gz", "tgz", "tar.bz2", "tar.xz") or name.endswith(TAR_SUFFIXES):
        return "tar"
    raise ValueError(f"{path}: unknown archive format {declared or Path(path).suffix!r}; expected .tar, .tar.gz, .tgz or .zip")


def safe_extract(
    archive: str | os.PathLike,
    target: str | os.PathLike,
    *,
    declared_format: str | None = None,
    reserved: Collection[str] = (),
) -> list[str]:
    """Extract ``archive`` into directory ``target``; return the top-level names it created.

    ``reserved`` lists top-level names the archive may not replace (a dataset folder's
    ``downloads`` and ``READY.json``).  Entries of an existing ``target`` that the archive also
    contains are replaced, so re-extracting after an interrupted run is idempotent.
    """
    archive, target = Path(archive), Path(target)
    fmt = archive_format(archive, declared_format)
    if not target.exists():
        with atomic_dir(target) as staging:
            return _extract_checked(archive, fmt, staging, reserved)
    if not target.is_dir():
        raise NotADirectoryError(f"cannot extract {archive} into {target}: it is not a directory")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.extract-", dir=target.parent))
    try:
        names = _extract_checked(archive, fmt, staging, reserved)
        for name in names:
            _replace(staging / name, target / name)
        return names
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- member checks -------------------------------------------------------------------------


def _refuse(archive: Path, member: str, why: str) -> ValueError:
    return ValueError(f"{archive}: refusing to extract member {member!r}: {why}; nothing was extracted")


def _normalise(path: str) -> str | None:
    """``path`` relative to the target with ``.`` and ``..`` resolved; None if it climbs out."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def _prefixes(rel: str) -> Iterator[str]:
    """The proper parent paths of ``rel``: ``a/b/c`` -> ``a``, ``a/b``."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def _walk_link(start_dir: str, link: str, symlinks: Collection[str]) -> str | None:
    """Where a link resolves, component by component; None if it leaves the target or passes
    through another symlink of the archive (whose real target lexical resolution cannot see)."""
    parts = [p for p in start_dir.split("/") if p]
    components = [c for c in link.split("/") if c not in ("", ".")]
    for i, comp in enumerate(components):
        if comp == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(comp)
        if i < len(components) - 1 and "/".join(parts) in symlinks:
            return None
    return "/".join(parts)


def _check(archive: Path, name: str, member_type: str, link: str | None,
           symlinks: Collection[str], reserved: Collection[str]) -> str:
    """The member's normalised relative path, or ValueError saying why it may not be extracted."""
    if member_type == "special":
        raise _refuse(archive, name, "device, fifo or other special file")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise _refuse(archive, name, "absolute path")
    rel = _normalise(name)
    if rel is None:
        raise _refuse(archive, name, "its '..' components lead outside the target directory")
    if rel == "" and member_type != "dir":
        raise _refuse(archive, name, "empty file name")
    if rel and rel.split("/")[0] in reserved:
        raise _refuse(archive, name, f"it would replace {rel.split('/')[0]!r}, which the archive may not touch")
    for parent in _prefixes(rel):
        if parent in symlinks:
            raise _refuse(archive, name, f"it would be written through the symlink {parent!r}")
    if member_type == "symlink":
        assert link is not None
        if link.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", link):
            raise _refuse(archive, name, f"symlink to the absolute path {link!r}")
        parent = rel.rpartition("/")[0]
        if _walk_link(parent, link, symlinks) is None:
            raise _refuse(archive, name, f"symlink target {link!r} lies outside the target directory")
    if member_type == "hardlink":
        assert link is not None
        if link.startswith(("/", "\\")) or _walk_link("", link, symlinks) is None:
            raise _refuse(archive, name, f"hard link target {link!r} lies outside the target directory")
    return rel


def _tar_member_type(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.isreg():
        return "file"
    return "special"


def _zip_member_type(info: zipfile.ZipInfo) -> str:
    fmt = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no Unix file type
    if fmt == stat.S_IFLNK:
        return "symlink"
    if info.is_dir():
        return "dir"
    if fmt not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special"
    return "file"


# --- extraction ----------------------------------------------------------------------------


def _extract_checked(archive: Path, fmt: str, staging: Path, reserved: Collection[str]) -> list[str]:
    if fmt == "zip":
        _extract_zip(archive, staging, reserved)
    else:
        _extract_tar(archive, staging, reserved)
    _check_tree(archive, staging)
    return sorted(os.listdir(staging))


def _extract_tar(archive: Path, staging: Path, reserved: Collection[str]) -> None:
    """One streaming pass (a 39 GB .tar.gz is not read twice): each member is checked before it
    is written; a refusal aborts, and the caller discards the staging directory."""
    symlinks: set[str] = set()
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:
            member_type = _tar_member_type(member)
            rel = _check(archive, member.name, member_type, member.linkname if member_type in ("symlink", "hardlink") else None,
                         symlinks, reserved)
            if member_type == "symlink":
                symlinks.add(rel)
            # Extract under the checked, normalised name: tarfile itself trips over 'a/../b'.
            changes = {"name": rel or "."}
            if member_type == "hardlink":
                changes["linkname"] = _normalise(member.linkname) or "."
            try:
                tf.extract(member.replace(**changes, deep=False), staging, filter="data")
            except tarfile.FilterError as err:
                raise _refuse(archive, member.name, str(err)) from err


def _extract_zip(archive: Path, staging: Path, reserved: Collection[str]) -> None:
    """Check every member first (a zip lists them up front), then write them ourselves:
    zipfile.extractall would silently rename hostile names instead of refusing them, and would
    write symlinks as small text files."""
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        member_types = [_zip_member_type(i) for i in infos]
        links = {i.filename: zf.read(i).decode("utf-8", "replace") for i, k in zip(infos, member_types) if k == "symlink"}
        symlinks = {r for r in (_normalise(n) for n in links) if r}
        checked = [(info, k, _check(archive, info.filename, k, links.get(info.filename), symlinks, reserved))
                   for info, k in zip(infos, member_types)]
        for info, k, rel in checked:
            dest = staging / rel
            if k == "dir":
                dest.mkdir(parents=True, exist_ok=True)
            elif k == "file":
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
        for info, k, rel in checked:  # links last, so nothing is ever written through one
            if k == "symlink":
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(links[info.filename], staging / rel)


def _check_tree(archive: Path, staging: Path) -> None:
    """Second line of defence: after extraction, no symlink may resolve outside the staging dir."""
    root = os.path.realpath(staging)
    for dirpath, dirnames, filenames in os.walk(staging):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                real = os.path.realpath(path)
                if real != root and not real.startswith(root + os.sep):
                    member = os.path.relpath(path, staging)
                    raise _refuse(archive, member, f"symlink resolves outside the target ({os.readlink(path)!r})")


def _replace(src: Path, dest: Path) -> None:
    """Move one extracted top-level entry into place, replacing a previous extraction of it."""
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif dest.exists() or dest.is_symlink():
        dest.unlink()
    os.replace(src, dest)
