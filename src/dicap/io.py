"""Atomic, pickle-free file I/O and the provenance record written beside every result.

Every writer goes through :func:`atomic_output`, so a job killed mid-write never leaves a
half-written file under the final name, and an error names the path it was writing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

TRACKED_PACKAGES = (
    "dicap", "torch", "diffusers", "open_clip_torch", "numpy", "pandas",
    "safetensors", "scikit-learn", "snakemake",
)


def _umask() -> int:
    """The process umask (reading it means setting it; set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _share(path: Path, mode: int) -> None:
    """Give a temporary file or folder the mode a plain ``open()``/``mkdir()`` would have.

    ``mkstemp`` and ``mkdtemp`` create 0600/0700 for privacy; renamed onto their final names
    that would hide every result from the group on a shared cluster disk.
    """
    os.chmod(path, mode & ~_umask())


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _share(tmp_path, 0o666)  # after the writer: some (safetensors) replace the file they are given
        os.replace(tmp_path, target)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        raise OSError(err.errno, f"could not write {target}: {err.strerror or err}") from err
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    _share(tmp, 0o777)
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class CorruptArtifact(ValueError):
    """A file that exists but cannot be read as what it is (truncated, half-copied, overwritten).

    A reader raises it naming the file; the job's entry point (``dicap.cli``) then removes the
    file if the workflow made it, since Snakemake would otherwise take it for current.
    """

    def __init__(self, path: str | os.PathLike, why: str) -> None:
        self.path, self.why = Path(path), " ".join(str(why).split())  # one line, whatever the library said
        super().__init__(f"{self.path} is {self.why}")


def discard_corrupt(err: CorruptArtifact, folder: Path | None = None, workdir: str | os.PathLike = ".") -> str:
    """Remove a corrupt workflow artifact (a file under ``build/<suite>/``); say how it comes back.

    Snakemake checks a file's age, never its contents: a corrupt input stays "current", and
    once the job that failed on it is gone the next run finds nothing to do.  Removed, it is
    missing, and ``--forcerun`` rebuilds it and everything made from it (a plain run would
    not: Snakemake leaves a missing file alone while what was made from it exists).  A file
    inside a folder output goes with its ``folder`` (``layout.folder_output``), the unit
    Snakemake rebuilds.  Files outside the build folder are not the workflow's: only named.
    """
    root = Path(workdir).resolve()
    rel = Path(os.path.relpath(err.path.resolve(), root))
    if len(rel.parts) < 3 or rel.parts[0] != "build":
        return str(err)
    unit = Path(os.path.relpath((root / folder).resolve(), root)) if folder is not None else rel
    if (root / unit).is_dir():
        shutil.rmtree(root / unit)
    else:
        (root / unit).unlink(missing_ok=True)
    suite = f"config.{rel.parts[1]}.yaml"
    configs = f" --configfile config.yaml {suite}" if (root / suite).is_file() else ""
    removed = "it" if unit == rel else unit
    return (f"{err.path} is corrupt ({err.why}); removed {removed}: `snakemake --forcerun {unit}{configs}` rebuilds it"
            " and what was made from it")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptArtifact(path, f"not valid JSON: {err}") from err


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], meta: Mapping[str, str] | None = None) -> None:
    """Save numpy arrays as safetensors (no torch needed, no pickle)."""
    from safetensors.numpy import save

    blob = save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=dict(meta or {}))
    with atomic_output(path) as tmp:
        tmp.write_bytes(canonical_safetensors(blob))


def canonical_safetensors(blob: bytes) -> bytes:
    """A safetensors file's bytes with its JSON header's keys sorted, so that equal tensors and
    metadata give equal bytes.

    safetensors serialises the header from a Rust hash map, whose order differs from process
    to process: the same tensors were written in different bytes by two runs, which DVC and a
    byte-for-byte comparison read as a change.  The data section and its offsets are untouched.
    """
    (size,) = struct.unpack("<Q", blob[:8])
    text = json.dumps(json.loads(blob[8 : 8 + size]), sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads its header to 8 bytes with spaces
    return struct.pack("<Q", len(text)) + text + blob[8 + size :]


@contextlib.contextmanager
def _reading_safetensors(path: str | os.PathLike) -> Iterator[None]:
    """Name ``path`` in any error reading it as safetensors: missing, or corrupt."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        yield
    except Exception as err:  # safetensors raises its own error types
        raise CorruptArtifact(path, f"not a readable safetensors file: {err}") from err


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    with _reading_safetensors(path):
        return load_file(str(path))


def check_arrays(path: str | os.PathLike) -> None:
    """Check that a safetensors file is whole (its header parses and covers the file), reading
    no tensor: for weights a library loads itself (open_clip, diffusers), whose errors name
    neither the file nor that it is damaged."""
    from safetensors import safe_open

    with _reading_safetensors(path), safe_open(str(path), framework="numpy"):
        pass


def read_table(path: str | os.PathLike) -> Any:
    """A Parquet or CSV table as a pandas DataFrame; a truncated or overwritten file names itself."""
    import pandas as pd

    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)
    except Exception as err:  # pyarrow's errors say neither the file nor that it is damaged
        raise CorruptArtifact(path, f"not a readable table: {err}") from err


def load_state_dict(path: str | os.PathLike, module: Any) -> Any:
    """Load safetensors weights into ``module``; a bad file or a shape mismatch names the path.

    torch's own messages ("size mismatch for conv1.weight") do not say which file was
    wrong, and a non-safetensors file would otherwise surface as a Rust panic.
    """
    import torch

    state = {k: torch.from_numpy(v.copy()) for k, v in load_arrays(path).items()}
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        details = [f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
                   f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, expected {tuple(expected[wrong[0]].shape)}" if wrong else ""]
        raise ValueError(f"{path} does not fit {type(module).__name__}: " + "; ".join(d for d in details if d))
    module.load_state_dict(state)
    return module


def save_state_dict(path: str | os.PathLike, module: Any) -> None:
    """Save a torch module's weights as safetensors (CPU copies, so CUDA-trained ones load anywhere)."""
    from safetensors.torch import save

    blob = save({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
    with atomic_output(path) as tmp:
        tmp.write_bytes(canonical_safetensors(blob))


def write_table(path: str | os.PathLike, frame: "Any") -> None:
    """Write a pandas DataFrame as Parquet or CSV, by extension."""
    with atomic_output(path) as tmp:
        if str(path).endswith(".parquet"):
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False, lineterminator="\n")


def params_hash(params: Any) -> str:
    """A short stable hash of a JSON-able parameter set."""
    blob = json.dumps(params, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def provenance(params: Any, seed: int | None = None) -> dict[str, Any]:
    """What a result needs beside it to be reproduced: config hash, seed, versions."""
    return {
        "config_hash": params_hash(params),
        "seed": seed,
        "params": params,
        "versions": package_versions(),
    }
