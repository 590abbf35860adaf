"""Atomic file output (io.py): nothing half-written, old content kept on failure, errors naming
the path, and outputs that follow the umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from dicap.io import atomic_dir, atomic_output, read_json, save_arrays, write_json, write_table

# --- atomic output ------------------------------------------------------------------------------------


def test_atomic_output_writes_on_success(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json(target, {"a": 1})
    assert read_json(target) == {"a": 1}
    assert os.listdir(target.parent) == ["out.json"]


def test_atomic_output_keeps_old_content_when_body_raises(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(target) as tmp:
            tmp.write_text("half-written new")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["result.txt"]


def test_atomic_output_leaves_no_file_when_body_raises(tmp_path):
    target = tmp_path / "never.csv"
    with pytest.raises(KeyError):
        with atomic_output(target) as tmp:
            tmp.write_text("x")
            raise KeyError("missing")
    assert os.listdir(tmp_path) == []


def test_write_error_names_the_path(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()  # a directory where the file should go: the final rename fails
    with pytest.raises(OSError) as info:
        write_json(target, {"a": 1})
    assert str(target) in str(info.value)
    assert os.listdir(tmp_path) == ["taken"] and os.listdir(target) == []


def test_os_error_in_body_names_the_path(tmp_path):
    import pandas as pd

    target = tmp_path / "table.parquet"

    class Unwritable(pd.DataFrame):
        def to_parquet(self, *args, **kwargs):
            raise PermissionError(13, "Permission denied")

    with pytest.raises(OSError) as info:
        write_table(target, Unwritable({"a": [1]}))
    assert str(target) in str(info.value)
    assert not target.exists() and os.listdir(tmp_path) == []


def test_write_json_is_canonical(tmp_path):
    target = tmp_path / "x.json"
    write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2, sort_keys=True) + "\n"


def test_disk_full_keeps_the_old_output_and_names_the_path(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    import numpy as np

    from dicap.io import load_arrays, save_arrays

    target = tmp_path / "features.safetensors"
    save_arrays(target, {"x": np.ones(3, np.float32)})

    def full_disk(path, data):  # the file is written whole, once: fail half-way through
        with open(path, "wb") as handle:
            handle.write(data[:7])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError, match=f"could not write {target}: No space left on device"):
        save_arrays(target, {"x": np.zeros(3, np.float32)})
    assert np.array_equal(load_arrays(target)["x"], np.ones(3, np.float32))
    assert os.listdir(tmp_path) == ["features.safetensors"]


def test_a_failed_model_directory_keeps_the_old_one(tmp_path):
    from dicap.io import atomic_dir

    model = tmp_path / "clip"
    model.mkdir()
    (model / "weights").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(model) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed while training")
    assert (model / "weights").read_text() == "old"
    assert os.listdir(tmp_path) == ["clip"]


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o027, 0o077])
def test_outputs_follow_the_umask(tmp_path, umask):
    before = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        save_arrays(tmp_path / "b.safetensors", {"x": np.zeros(3, np.float32)})
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "w.txt").write_text("w")
    finally:
        os.umask(before)
    for name in ("a.json", "b.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~umask
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left behind"


@pytest.mark.parametrize("meta", [None, {"method": "cocoop", "learner": "cocoop", "seed": "1"}, {"z": "1", "a": "2", "m": ""}])
def test_safetensors_headers_are_canonical_so_equal_content_is_equal_bytes(tmp_path, meta):
    """The header's keys are sorted (safetensors writes them in a per-process hash order)."""
    import json
    import struct

    import numpy as np

    from dicap.io import load_arrays, save_arrays

    arrays = {name: np.arange(n, dtype=dtype) for n, (name, dtype) in enumerate(
        [("b", np.float32), ("a", np.int64), ("ctx", np.float32), ("c", np.uint8)], start=1)}
    save_arrays(tmp_path / "x.safetensors", arrays, meta)
    raw = (tmp_path / "x.safetensors").read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    assert size % 8 == 0
    header = raw[8:8 + size].decode().rstrip(" ")
    assert header == json.dumps(json.loads(header), sort_keys=True, separators=(",", ":"))
    assert {k: v.tolist() for k, v in load_arrays(tmp_path / "x.safetensors").items()} == {k: v.tolist() for k, v in arrays.items()}
    from safetensors import safe_open

    with safe_open(str(tmp_path / "x.safetensors"), "np") as f:
        assert f.metadata() == (meta or {}) or (meta is None and f.metadata() in (None, {}))


# --- corrupt artifacts -----------------------------------------------------------------------------------


def _truncate(path, keep):
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


@pytest.mark.parametrize("keep", [0.0, 0.01, 0.5, 0.99])
def test_a_truncated_file_names_itself_as_corrupt(tmp_path, keep):
    import pandas as pd

    from dicap.io import CorruptArtifact, check_arrays, load_arrays, read_table

    arrays, table, record = tmp_path / "x.safetensors", tmp_path / "x.parquet", tmp_path / "x.json"
    save_arrays(arrays, {"x": np.arange(64, dtype=np.float32)})
    write_table(table, pd.DataFrame({"a": range(16)}))
    write_json(record, {"a": list(range(16))})
    check_arrays(arrays)  # whole: no error
    for path, read in ((arrays, check_arrays), (arrays, load_arrays), (table, read_table), (record, read_json)):
        _truncate(path, keep)
        with pytest.raises(CorruptArtifact, match=" is not ") as err:
            read(path)
        assert err.value.path == path and str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_a_missing_file_is_not_corrupt(tmp_path):
    from dicap.io import CorruptArtifact, check_arrays, load_arrays, read_table

    for read in (check_arrays, load_arrays, read_table):
        with pytest.raises(FileNotFoundError) as err:
            read(tmp_path / "absent.safetensors")
        assert not isinstance(err.value, CorruptArtifact)


def _corrupt_in_build(tmp_path, rel):
    """A truncated safetensors file at ``rel`` under ``tmp_path``, and the error reading it raises."""
    from dicap.io import CorruptArtifact, load_arrays

    path = tmp_path / rel
    save_arrays(path, {"x": np.ones(32, np.float32)})
    _truncate(path, 0.5)
    with pytest.raises(CorruptArtifact) as err:
        load_arrays(path)
    return path, err.value


@pytest.mark.parametrize("rel", ["build/embedded/counterfactuals/shapes/main/seed1/shard0-of-2.safetensors",
                                 "build/embedded/features/shapes/main/seed2.safetensors",
                                 "build/paper/features/eurosat/eval.safetensors"])
def test_a_corrupt_artifact_is_removed_and_the_command_that_rebuilds_it_named(tmp_path, rel):
    from dicap.io import discard_corrupt

    (tmp_path / "config.paper.yaml").write_text("suite: paper\n")
    path, err = _corrupt_in_build(tmp_path, rel)
    keep = path.with_name("other.safetensors")
    save_arrays(keep, {"x": np.ones(2, np.float32)})
    message = discard_corrupt(err, workdir=tmp_path)
    assert not path.exists() and keep.exists()
    assert message.startswith(f"{path} is corrupt (not a readable safetensors file") and "\n" not in message
    configs = " --configfile config.yaml config.paper.yaml" if "/paper/" in rel else ""
    assert message.endswith(f"removed it: `snakemake --forcerun {rel}{configs}` rebuilds it and what was made from it")


@pytest.mark.parametrize("folder", ["models/shapes/oracle/model", "models/shapes/diffusion/model",
                                    "models/shapes/clip/model", "models/shapes/guide_classifier"])
def test_a_corrupt_file_in_a_model_folder_takes_the_folder(tmp_path, folder):
    """Snakemake rebuilds a missing folder output, never a file missing from one."""
    from dicap import layout
    from dicap.io import discard_corrupt

    path, err = _corrupt_in_build(tmp_path, f"build/embedded/{folder}/unet/weights.safetensors")
    (tmp_path / f"build/embedded/{folder}/info.json").write_text("{}")
    report = (tmp_path / "build/embedded" / folder).parent / "report.json"
    report.write_text("{}")
    message = discard_corrupt(err, layout.folder_output(path.relative_to(tmp_path)), tmp_path)
    assert not (tmp_path / "build/embedded" / folder).exists() and report.exists()
    assert f"removed build/embedded/{folder}: `snakemake --forcerun build/embedded/{folder}`" in message


def test_a_truncated_model_names_its_file(tmp_path):
    import torch

    from dicap.io import CorruptArtifact, load_state_dict, save_state_dict

    path = tmp_path / "build/embedded/models/shapes/oracle/model/oracle.safetensors"
    save_state_dict(path, torch.nn.Linear(8, 4))
    _truncate(path, 0.7)
    with pytest.raises(CorruptArtifact, match=f"{path} is not a readable safetensors file"):
        load_state_dict(path, torch.nn.Linear(8, 4))


def test_a_corrupt_file_outside_the_build_folder_is_left_alone(tmp_path):
    from dicap.io import discard_corrupt

    for rel in ("data/paper/eurosat/images.safetensors", "results/x.safetensors", "build/x.safetensors"):
        path, err = _corrupt_in_build(tmp_path, rel)
        assert discard_corrupt(err, workdir=tmp_path) == str(err) and path.exists()
    path, err = _corrupt_in_build(tmp_path / "elsewhere", "build/embedded/features/shapes/eval.safetensors")
    assert discard_corrupt(err, workdir=tmp_path / "here") == str(err) and path.exists()


# Direct readers of workflow files left outside dicap.io, each with its reason.
UNCHECKED_READERS = {
    "report/cost.py": "Snakemake's own benchmark files (tab separated), outside the build folder",
    "report/reproduction.py": "the committed reference numbers (results/reference/), read with their own NA rules",
}


def test_workflow_tables_and_arrays_are_read_through_dicap_io():
    """A reader that bypasses dicap.io turns a truncated file into a library's error that names
    neither the file nor the command that rebuilds it (docs/dvc.md, "A corrupt artifact")."""
    import re

    src = Path(__file__).resolve().parents[2] / "src" / "dicap"
    direct = re.compile(r"\bpd\.read_(parquet|csv)\(|\bload_file\(|\bsafetensors\.(numpy|torch)\b.*\bload\b")
    found = {str(p.relative_to(src)) for p in src.rglob("*.py") if p.name != "io.py" and direct.search(p.read_text())}
    assert found <= set(UNCHECKED_READERS), sorted(found - set(UNCHECKED_READERS))
    assert set(UNCHECKED_READERS) <= found, "an exception no longer needed: remove it"
