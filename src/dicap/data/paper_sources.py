"""The paper suite's real datasets: read the registry, download, verify, extract, mark READY.

``registry.yaml`` beside this module lists, for the 11 datasets of CoOp's base-to-novel
benchmark and for CPL's retrieval (Flickr30k, MSCOCO) and VQA (VQAv2) datasets, every file with its URL and published checksum (and where that checksum was
published), how to extract it, and where the images and the split file end up.
:func:`prepare_paper_dataset` turns one entry into::

    <root>/<key>/downloads/<files>      fetched or user-placed, checksums verified
    <root>/<key>/<extracted layout>     e.g. oxford_pets/images/*.jpg, eurosat/2750/<Class>/
    <root>/<key>/READY.json             written last, atomically

READY.json lists every file with its verified hashes (``files``: filename, path, url, algorithm,
checksum, checksum_source, sha256, verified, manual), the ``unverified`` file names, ``key``,
``task`` (classification, retrieval or vqa), ``annotations`` (role -> file relative to
``<root>/<key>``: a retrieval entry's Karpathy JSON, a VQA entry's question and answer JSON),
``image_root`` (relative to ``<root>/<key>``), ``split_file`` (a name in downloads/, as in the
registry; ``split_path`` is the relative path) and what each extraction created.  A later rule
can depend on that one file, and a rerun after success makes no network request.

An entry with ``local: true`` is a folder already on disk (a lab's own dataset, or CoOp's
``$DATA`` tree as it is): nothing is downloaded or extracted; the split file (its sha256 when
the entry gives one) and the number of images it names (``images``) are verified, every image
must exist inside the image root, and READY.json records what was checked.  ``<root>/<key>``
may be a link only where the entry declares it (``link:``, absolute or relative to the data
root); the download job makes that link when the folder does not exist yet.

An entry with ``evaluation_only: true`` is a test-only target of ImageNet's classes (the
domain-generalization setting: ImageNet-V2, -Sketch, -A, -R): ``classes`` names its label map
(:data:`dicap.data.imagenet_variants.LABEL_MAPS`), ``class_folders`` how its folders name a class
(``wnid``, the default, or ``index``), and CoOp's ``classnames.txt`` is among its files.  It is
no dataset of the base-to-novel benchmark (:func:`dataset_keys` leaves it out;
:func:`evaluation_targets` lists it).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dicap.config import REGISTRY_ENV, registry_file, registry_keys, registry_task
from dicap.data.download import ALGORITHMS, Verified, fetch, mirror_url, verify_placed
from dicap.data.extract import archive_format, safe_extract
from dicap.data.imagenet_variants import CLASS_FOLDERS, CLASS_NAMES, LABEL_MAPS
from dicap.io import read_json, write_json

log = logging.getLogger(__name__)

# The packaged registry (dicap.config.registry_file finds it): named here so that code_version
# hashes it into the jobs that read it.
REGISTRY = Path(__file__).with_name("registry.yaml")
READY = "READY.json"
DOWNLOADS = "downloads"
# The data contract of an entry (``task:``; absent means classification, so a site's older
# registry copy keeps working) and the annotation files each contract needs after extraction.
TASKS = ("classification", "retrieval", "vqa")
ANNOTATION_ROLES = {"classification": (), "retrieval": ("captions",), "vqa": ("questions", "answers")}
# A key is a folder name and a Snakemake wildcard: no path separators, no dot files, no '..'.
KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# The keys a ``local: true`` entry may carry (a typo such as ``image_rot`` must not pass silently).
LOCAL_KEYS = {"name", "homepage", "coop_dir", "task", "local", "link", "image_root", "split_file", "split_sha256",
              "split_note", "images"}


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; a registry with two ``dtd``
    entries must fail instead of silently losing one."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ValueError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} of {node.start_mark.name}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_registry(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The dataset registry, refusing duplicate keys: ``path``, else ``$DICAP_REGISTRY`` (a
    site's own copy, say with a mirror's checksums), else the packaged ``registry.yaml``."""
    path = registry_path(path)
    try:
        with open(path) as fh:
            registry = yaml.load(fh, Loader=_UniqueKeyLoader)
    except OSError as err:
        raise ValueError(f"{path}: cannot read the dataset registry ({err.strerror}); check {REGISTRY_ENV}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(registry, dict) or not isinstance(registry.get("datasets"), dict):
        raise ValueError(f"{path} has no 'datasets' mapping")
    problems = [p for key, entry in registry["datasets"].items() for p in _entry_shape_problems(key, entry)]
    if problems:  # checked where the file enters: a bad key or local entry never reaches a job
        raise ValueError(f"{path}: {problems[0]}" + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""))
    return registry


def registry_path(path: str | os.PathLike | None = None) -> Path:
    """The registry file :func:`load_registry` reads: ``path``, ``$DICAP_REGISTRY`` or the packaged
    one, as the config check finds it (:func:`dicap.config.registry_file`)."""
    return registry_file(path)


def _entry_shape_problems(key: Any, entry: Any) -> list[str]:
    """What makes an entry unusable before any check of its files: a key that is no plain
    folder name, an entry that is no mapping, or a ``local: true`` entry that is not sound."""
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        return [f"dataset key {key!r} is not a plain name (letters, digits, '_' and '-', starting with a letter or digit)"]
    if not isinstance(entry, Mapping):
        return [f"registry entry {key}: must be a mapping, got {type(entry).__name__}"]
    return _local_problems(key, entry) if entry.get("local") else _evaluation_problems(key, entry)


def _evaluation_problems(key: str, entry: Mapping[str, Any]) -> list[str]:
    """The rules of a test-only target (``evaluation_only: true``): a label map, a folder
    naming, CoOp's class names among its files, and no split file (every image is test)."""
    if "evaluation_only" not in entry:
        return [f"registry entry {key}: {name} is only for an evaluation_only entry" for name in ("classes", "class_folders")
                if name in entry]
    if entry["evaluation_only"] is not True:
        return [f"registry entry {key}: evaluation_only must be true or absent, got {entry['evaluation_only']!r}"]
    problems = []
    if task_of(entry) != "classification":
        problems.append(f"registry entry {key}: an evaluation_only entry is a classification target, got task {task_of(entry)!r}")
    classes = entry.get("classes")
    if not isinstance(classes, str) or classes not in LABEL_MAPS:
        problems.append(f"registry entry {key}: classes {classes!r} is not a label map (one of {', '.join(LABEL_MAPS)})")
    folders = entry.get("class_folders", "wnid")
    if not isinstance(folders, str) or folders not in CLASS_FOLDERS:
        problems.append(f"registry entry {key}: class_folders {folders!r} must be one of {', '.join(CLASS_FOLDERS)}")
    if entry.get("split_file") is not None:
        problems.append(f"registry entry {key}: an evaluation_only entry has no split_file (every image is test), "
                        f"got {entry['split_file']!r}")
    files = entry.get("files")
    names = [f.get("filename") for f in files if isinstance(f, Mapping)] if isinstance(files, list) else []
    if CLASS_NAMES not in names:
        problems.append(f"registry entry {key}: an evaluation_only entry needs {CLASS_NAMES} (CoOp's class names) among its files")
    return problems


def _relative_problem(key: str, field: str, value: Any) -> list[str]:
    """A path the registry gives relative to the dataset folder: a non-empty string that stays inside."""
    if not isinstance(value, str) or not value:
        return [f"registry entry {key}: {field} must be a relative path, got {value!r}"]
    if Path(value).is_absolute() or ".." in Path(value).parts:
        return [f"registry entry {key}: {field} {value!r} leaves the dataset folder"]
    return []


def _local_problems(key: str, entry: Mapping[str, Any]) -> list[str]:
    """The rules of a ``local: true`` entry (a folder already on disk, nothing downloaded)."""
    problems = [f"registry entry {key}: unknown key {name!r} for a local entry (allowed: {', '.join(sorted(LOCAL_KEYS))})"
                for name in entry if name not in LOCAL_KEYS]
    if entry.get("local") is not True:
        problems.append(f"registry entry {key}: local must be true or absent, got {entry.get('local')!r}")
    if task_of(entry) != "classification":
        problems.append(f"registry entry {key}: a local entry is a classification dataset (task {task_of(entry)!r} needs a download entry)")
    problems += _relative_problem(key, "image_root", entry.get("image_root"))
    split = entry.get("split_file")
    if split is None:
        if not entry.get("split_note"):
            problems.append(f"registry entry {key}: no split_file and no split_note")
    else:
        problems += _relative_problem(key, "split_file", split)
    digest = entry.get("split_sha256")
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        problems.append(f"registry entry {key}: split_sha256 {digest!r} is not a lowercase sha256 hex digest")
    if digest is not None and split is None:
        problems.append(f"registry entry {key}: split_sha256 given without a split_file")
    images = entry.get("images")
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        problems.append(f"registry entry {key}: images must be the number of images the split names (an integer >= 1), got {images!r}")
    link = entry.get("link")
    if link is not None and (not isinstance(link, str) or not link):
        problems.append(f"registry entry {key}: link must be a folder path, got {link!r}")
    return problems


def task_of(entry: Mapping[str, Any]) -> str:
    """The entry's task; classification when the registry does not say (as the config check reads it)."""
    return registry_task(entry)


def dataset_keys(registry: Mapping[str, Any], task: str) -> list[str]:
    """The registry's datasets of one task, in registry order (the classification benchmark is
    what the config's ``datasets`` list draws from; retrieval and VQA entries are not in it,
    nor are the test-only targets of :func:`evaluation_targets`)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return registry_keys(registry["datasets"], task)


def evaluation_targets(registry: Mapping[str, Any]) -> list[str]:
    """The test-only targets (``evaluation_only: true``) in registry order: the
    domain-generalization targets on which ImageNet prompts are scored unchanged."""
    return [key for key, entry in registry["datasets"].items() if entry.get("evaluation_only")]


def prepare_paper_dataset(
    key: str,
    root: str | os.PathLike,
    registry: Mapping[str, Any] | None = None,
    base_url: str | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Download (or verify the user-placed) files of dataset ``key`` and extract them under
    ``<root>/<key>/``; return the READY.json record.

    ``base_url`` (default: ``$DICAP_MIRROR``) replaces each URL's scheme and host, for a local
    mirror or cache; checksums are verified all the same.  A READY.json that matches the
    registry's files and whose image root exists means the work is done: nothing is fetched.
    Manual datasets (ImageNet, Stanford Cars) raise FileNotFoundError carrying the registry's
    instructions until their files are in ``<root>/<key>/downloads/``.
    """
    registry = registry if registry is not None else load_registry()
    datasets = registry["datasets"]
    if key not in datasets:
        raise KeyError(f"unknown paper dataset {key!r}; the registry lists {sorted(datasets)}")
    entry = datasets[key]
    dataset = dataset_folder(root, key, entry, create=True)
    if entry.get("local"):
        return _prepare_local(key, entry, dataset)
    downloads = dataset / DOWNLOADS
    ready = dataset / READY
    done = _previous_run(ready, entry, dataset)
    if done is not None:
        return done

    instructions = _instructions(entry, dataset)
    missing = [f["filename"] for f in entry["files"] if f.get("manual") and not _file_in(downloads, f["filename"], key).is_file()]
    if missing:  # before any download: the user can act at once, not after an hour of fetching
        log.error("%s: missing %s", key, ", ".join(missing))
        raise FileNotFoundError(instructions)

    verified: list[tuple[Mapping[str, Any], Verified]] = []
    for spec in entry["files"]:
        cross = {c["algorithm"]: c["checksum"] for c in spec.get("cross_checks", [])}
        dest = _file_in(downloads, spec["filename"], key)
        if spec.get("manual"):
            result = verify_placed(dest, spec["checksum"], spec["algorithm"], instructions, cross_checks=cross)
        else:
            result = fetch(mirror_url(spec["url"], base_url), dest, spec["checksum"], spec["algorithm"],
                           cross_checks=cross, progress=progress)
        verified.append((spec, result))

    extracted = []
    for step in entry.get("extract", []):
        archive = _inside(dataset, step["archive"], key)
        into = _inside(dataset, step.get("into", "."), key)
        log.info("%s: extracting %s", key, step["archive"])
        names = safe_extract(archive, into, declared_format=step.get("format"), reserved=(DOWNLOADS, READY))
        extracted.append({"archive": step["archive"], "into": step.get("into", "."), "entries": names})

    image_root = _inside(dataset, entry["image_root"], key)
    if not image_root.is_dir():
        hint = instructions if entry.get("manual") else "the archive's layout differs from the registry's image_root"
        raise FileNotFoundError(f"{image_root} does not exist after preparing {key}: {hint}")
    for role, rel in entry.get("annotations", {}).items():
        if not _inside(dataset, rel, key).is_file():
            raise FileNotFoundError(f"{dataset / rel} ({role}) does not exist after preparing {key}: "
                                    "the archive's layout differs from the registry's annotations")

    record = {
        "key": key,
        "name": entry["name"],
        "task": task_of(entry),
        "annotations": dict(entry.get("annotations", {})),  # role -> path relative to <root>/<key>
        "image_root": entry["image_root"],
        "split_file": entry.get("split_file"),  # a name in downloads/, as in the registry
        "split_path": f"{DOWNLOADS}/{entry['split_file']}" if entry.get("split_file") else None,
        "split_note": entry.get("split_note"),
        "files": [{**result.record(), "algorithm": spec["algorithm"], "path": f"{DOWNLOADS}/{spec['filename']}", "url": spec["url"],
                   "checksum_source": spec.get("checksum_source"), "manual": bool(spec.get("manual"))}
                  for spec, result in verified],
        "unverified": [spec["filename"] for spec, result in verified if not result.verified],
        "extracted": extracted,
    }
    write_json(ready, record)
    if record["unverified"]:
        log.warning("%s is ready, but %s carry no published checksum (sha256 recorded in READY.json)",
                    key, ", ".join(record["unverified"]))
    return record


def dataset_folder(root: str | os.PathLike, key: str, entry: Mapping[str, Any], *, create: bool = False) -> Path:
    """``<root>/<key>``, refused if it is a link the entry does not declare.

    A link there is how a lab reuses a tree it already has (CoOp's ``$DATA/caltech-101`` as
    ``<root>/caltech101``); an undeclared one could point a job anywhere, so it must be named
    in the registry (``link:``, absolute or relative to ``root``) and resolve to that folder.
    With ``create``, a declared link that does not exist yet (or is an empty folder) is made.
    """
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise ValueError(f"dataset key {key!r} is not a plain name; refused")
    folder = Path(root) / key
    declared = entry.get("link")
    if declared is None:
        if folder.is_symlink():
            raise ValueError(f"{folder} is a link to {os.readlink(folder)} that registry entry {key} does not declare; "
                             f"add 'link: {os.readlink(folder)}' to the entry, or make it a folder")
        return folder
    target = Path(root) / Path(declared).expanduser()  # an absolute link replaces root
    if not target.is_dir():
        raise FileNotFoundError(f"registry entry {key}: link {declared!r} -> {target} is not an existing folder")
    if create and not folder.is_symlink() and (not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))):
        # Snakemake makes an output's folder before the job runs: an empty one gives way to the link
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists():
            folder.rmdir()
        folder.symlink_to(target.resolve(), target_is_directory=True)
        log.info("%s: linked %s -> %s (declared in the registry)", key, folder, target.resolve())
    if not folder.is_symlink():
        raise ValueError(f"registry entry {key}: declares link {declared!r}, but {folder} is "
                         f"{'a folder' if folder.exists() else 'missing'}; remove one or the other")
    if folder.resolve() != target.resolve():
        raise ValueError(f"{folder} links to {folder.resolve()}, but registry entry {key} declares link {declared!r} ({target.resolve()})")
    return folder


def _prepare_local(key: str, entry: Mapping[str, Any], dataset: Path) -> dict[str, Any]:
    """Verify a folder already on disk: the split file, the image count, every image present."""
    import hashlib

    from dicap.data.coop import dataset_splits

    if not dataset.is_dir():
        raise FileNotFoundError(f"registry entry {key} is local, but {dataset} is not a folder; "
                                "put the dataset there, or declare where it is with link:")
    split_sha256 = None
    if entry.get("split_file"):
        split = _inside(dataset, entry["split_file"], key)
        if not split.is_file():
            raise FileNotFoundError(f"registry entry {key}: split_file {split} does not exist")
        split_sha256 = hashlib.sha256(split.read_bytes()).hexdigest()
        if entry.get("split_sha256") and entry["split_sha256"] != split_sha256:
            raise ValueError(f"registry entry {key}: {split} has sha256 {split_sha256}, the registry says {entry['split_sha256']}; refused")
    image_root = _inside(dataset, entry["image_root"], key)
    if not image_root.is_dir():
        raise FileNotFoundError(f"registry entry {key}: image_root {image_root} is not a folder")
    _, splits = dataset_splits({"key": key, **entry}, dataset)
    from dicap.guards import contained

    paths = list(dict.fromkeys(p for entries in splits.values() for p, _, _ in entries))
    missing = [p for p in paths if not contained(image_root, p, f"image named by the split of {key}").is_file()]
    if missing:
        raise FileNotFoundError(f"registry entry {key}: {len(missing)} of the {len(paths)} images the split names are missing "
                                f"under {image_root}, e.g. {missing[:3]}")
    if len(paths) != entry["images"]:
        raise ValueError(f"registry entry {key}: the split names {len(paths)} images, the registry says images: {entry['images']}; "
                         "is this the right folder and split file?")
    record = {
        "key": key, "name": entry.get("name", key), "task": "classification", "annotations": {}, "local": True,
        "link": entry.get("link"), "image_root": entry["image_root"], "images": len(paths),
        "split_file": entry.get("split_file"), "split_path": entry.get("split_file"), "split_note": entry.get("split_note"),
        "split_sha256": split_sha256, "files": [], "unverified": [] if entry.get("split_sha256") or not split_sha256 else [entry["split_file"]],
        "extracted": [],
    }
    write_json(dataset / READY, record)
    log.info("%s: local folder %s verified (%d images%s)", key, dataset, len(paths),
             "" if not record["unverified"] else f"; split file sha256 {split_sha256}, pin it as split_sha256")
    return record


def _previous_run(ready: Path, entry: Mapping[str, Any], dataset: Path) -> dict[str, Any] | None:
    """The READY record if it still describes this registry entry and the images are there."""
    if not ready.is_file():
        return None
    try:
        record = read_json(ready)
        same = [(f["filename"], f["algorithm"], f["checksum"]) for f in record["files"]] == [
            (f["filename"], f["algorithm"], f["checksum"] and f["checksum"].lower()) for f in entry["files"]]
    except (ValueError, KeyError, TypeError):
        same = False
    annotations = all((dataset / rel).is_file() for rel in entry.get("annotations", {}).values())
    if same and annotations and (dataset / entry["image_root"]).is_dir():
        return record
    log.info("%s is stale (registry changed or images missing); preparing %s again", ready, dataset.name)
    return None


def _instructions(entry: Mapping[str, Any], dataset: Path) -> str:
    text = entry.get("instructions") or f"place the files of {entry['name']} in {{downloads}}/"
    return text.format(downloads=dataset / DOWNLOADS, dataset=dataset)


def _inside(dataset: Path, rel: str, key: str) -> Path:
    """``dataset / rel``, refusing registry paths that leave the dataset folder."""
    path = (dataset / rel).resolve()
    if path != dataset.resolve() and dataset.resolve() not in path.parents:
        raise ValueError(f"registry entry {key}: path {rel!r} leaves {dataset}")
    return path


def _file_in(downloads: Path, filename: str, key: str) -> Path:
    """``downloads / filename``; a file name is a plain name, never a path that leaves downloads/."""
    if not filename or Path(filename).name != filename or filename in (".", ".."):
        raise ValueError(f"registry entry {key}: file name {filename!r} is not a plain file name; refused")
    return downloads / filename


def check_registry(registry: Mapping[str, Any]) -> list[str]:
    """Problems with a registry, one line each (empty when it is sound): the rules every
    entry must follow so that no checksum is silently missing or unsourced."""
    problems: list[str] = []
    for key, entry in registry["datasets"].items():
        shape = _entry_shape_problems(key, entry)
        if shape or entry.get("local"):  # a local entry has no files to check: its own rules only
            problems += [p.removeprefix("registry entry ") for p in shape]
            continue
        names = [f.get("filename") for f in entry.get("files", [])]
        if not names:
            problems.append(f"{key}: no files")
        if len(set(names)) != len(names):
            problems.append(f"{key}: a file name is listed twice")
        for f in entry.get("files", []):
            where = f"{key}/{f.get('filename')}"
            if Path(str(f.get("filename"))).name != f.get("filename") or f.get("filename") in (".", ".."):
                problems.append(f"{where}: file name is not a plain name (it would leave downloads/)")
            if not str(f.get("url", "")).startswith(("https://", "http://")):
                problems.append(f"{where}: url {f.get('url')!r} is not http(s)")
            if f.get("algorithm") not in ALGORITHMS:
                problems.append(f"{where}: algorithm {f.get('algorithm')!r} not in {ALGORITHMS}")
            for c in [f, *f.get("cross_checks", [])]:
                value = c.get("checksum")
                if value is None:
                    if c is not f or not f.get("checksum_note"):
                        problems.append(f"{where}: checksum null without a checksum_note")
                elif not c.get("checksum_source"):
                    problems.append(f"{where}: checksum {value} has no checksum_source")
                elif len(value) != {"md5": 32, "sha256": 64}.get(c.get("algorithm"), -1) or \
                        any(ch not in "0123456789abcdef" for ch in value):
                    problems.append(f"{where}: {c.get('algorithm')} {value!r} is not a hex digest of that algorithm")
        if any(f.get("manual") for f in entry.get("files", [])) and not (entry.get("manual") and entry.get("instructions")):
            problems.append(f"{key}: has manual files but no manual: true / instructions")
        split = entry.get("split_file")
        if split is not None and split not in names:
            problems.append(f"{key}: split_file {split} is not among its files")
        if split is None and not entry.get("split_note"):
            problems.append(f"{key}: no split_file and no split_note")
        for i, step in enumerate(entry.get("extract", [])):
            archive = step.get("archive", "")
            if archive.startswith(f"{DOWNLOADS}/"):
                if archive.split("/", 1)[1] not in names:
                    problems.append(f"{key}: extracts {archive}, which is not among its files")
            elif i == 0:  # an archive inside another one can only come from an earlier step
                problems.append(f"{key}: extracts {archive} before anything was extracted")
            try:
                archive_format(archive, step.get("format"))
            except ValueError as err:
                problems.append(f"{key}: {err}")
        if "image_root" not in entry:
            problems.append(f"{key}: no image_root")
        problems += _task_problems(key, entry)
        paths = [("image_root", entry.get("image_root"))] + [
            (f"extract[{i}].{k}", step.get(k)) for i, step in enumerate(entry.get("extract", [])) for k in ("archive", "into")] + [
            (f"annotations.{role}", rel) for role, rel in _mapping(entry.get("annotations")).items()]
        for field, value in paths:
            if value is not None and (Path(str(value)).is_absolute() or ".." in Path(str(value)).parts):
                problems.append(f"{key}: {field} {value!r} leaves the dataset folder")
    return problems


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _task_problems(key: str, entry: Mapping[str, Any]) -> list[str]:
    """A retrieval or VQA entry must name the annotation files its parser reads, and they can
    only come out of an archive; a classification entry must not carry any."""
    task = task_of(entry)
    if task not in TASKS:
        return [f"{key}: task {task!r} not in {TASKS}"]
    annotations = entry.get("annotations", {})
    if not isinstance(annotations, Mapping):
        return [f"{key}: annotations must map a role to a path"]
    problems = [f"{key}: task {task} needs annotations.{role}" for role in ANNOTATION_ROLES[task] if not annotations.get(role)]
    problems += [f"{key}: annotations.{role} is not used by task {task}" for role in annotations if role not in ANNOTATION_ROLES[task]]
    if annotations and not entry.get("extract"):
        problems.append(f"{key}: annotations listed but nothing is extracted")
    return problems
