"""`dvc repro` after a one-key change runs the jobs `snakemake` plans, and no other file moves.

DVC deletes a stage's outputs before running it unless they are ``persist``; every stage of
dvc.yaml persists its outputs, so Snakemake alone decides what is stale (docs/dvc.md).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from pathlib import Path

import yaml

from snakemake_runner import BIN, DVC, run, tiny_checkout

UPSTREAM = {"prepare_dataset", "make_split", "clip_backbone", "diffusion_backbone", "oracle"}
# Files no Snakemake rule makes, where the ablations' variants live (excluded in .dvcignore).
PLANTED = ("build/embedded/counterfactuals/shapes/sample_random/seed1/planted.txt",
           "build/embedded/features/shapes/guidance_scale10/planted.txt")


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file of the run's build and results folders -> (inode, mtime in ns)."""
    found = {}
    for top in ("build", "results"):
        for path in (root / top).rglob("*"):
            if path.is_file():
                found[str(path.relative_to(root))] = (path.stat().st_ino, path.stat().st_mtime_ns)
    return found


def _jobs(log: str) -> tuple[Counter, set[str]]:
    """The jobs a Snakemake log (a run's or a dry run's) shows, per rule, and their outputs."""
    jobs = Counter(re.findall(r"(?m)^(?:local)?rule (\w+):$", log))
    outputs = {o.strip() for line in re.findall(r"(?m)^\s+output: (.+)$", log) for o in line.split(",")}
    return jobs, outputs


def _plan(root: Path, target: str) -> tuple[Counter, set[str]]:
    return _jobs(run(str(BIN / "snakemake"), "-n", target, cwd=root).stdout)


def _repro(root: Path, *stages: str) -> tuple[str, Counter, set[str]]:
    out = run(DVC, "repro", *stages, cwd=root, timeout=1800)
    return (out.stdout, *_jobs(out.stdout + out.stderr))


def _set(root: Path, block: str, key: str, change) -> None:
    config = yaml.safe_load((root / "config.yaml").read_text())
    config[block][key] = change(config[block][key])
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _assert_reuse(root: Path, before: dict[str, tuple[int, int]], planned: set[str]) -> None:
    """Each file that no planned job writes is the very same file (inode, mtime); nothing planted is lost."""
    stems = {str(Path(o).with_suffix("")) for o in planned}

    def made(name: str) -> bool:
        """An output, a file in a folder output, or one beside an output (a task prompt's history, .json)."""
        return str(Path(name).with_suffix("")) in stems or any(name.startswith(o.rstrip("/") + "/") for o in planned)

    after = _files(root)
    moved = [n for n, stat in before.items() if not made(n) and after.get(n) != stat]
    assert not moved, f"{len(moved)} files no planned job writes were rewritten or removed: {moved[:5]}"
    assert all((root / p).read_text() == "ablation" for p in PLANTED)


def test_dvc_repro_runs_what_snakemake_plans_and_keeps_the_rest(tmp_path):
    root = tmp_path / "origin"
    root.mkdir()
    tiny_checkout(root)
    git = ("git", "-c", "user.name=t", "-c", "user.email=t@t")
    run("git", "init", "-q", cwd=root)
    run(*git, "add", "-A", cwd=root)
    run(*git, "commit", "-qm", "tiny", cwd=root)
    run(DVC, "repro", "artifacts", "results", cwd=root, timeout=1800)
    for path in PLANTED:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("ablation")

    # The guidance scale: the diffusion check, then the main variant's counterfactuals and what reads
    # them, all in one Snakemake pass (no input is ancient(): docs/dvc.md), never a backbone, a split
    # or the data.
    _set(root, "counterfactual", "guidance_scale", lambda s: s + 1)
    planned, _ = _plan(root, "artifacts")
    before = _files(root)
    _, ran, written = _repro(root, "artifacts")
    assert ran == planned, (planned, ran)
    assert ran["counterfactual_shard"] and not set(ran) & UPSTREAM, ran
    assert not _plan(root, "artifacts")[0], "dvc repro left artifacts that Snakemake still plans"
    _assert_reuse(root, before, written)

    # A prompt key: no artifact job it adds (their stage did not change), the results the plan names.
    # The figure's guidance-scale variants read the diffusion check the new scale reran, so `all`
    # had their shards to redo before the key changed; the key adds prompt training, not shards.
    # The key changes the DVC way (docs/dvc.md#experiments): `dvc exp run -S` sets it, runs the
    # stages and keeps the experiment; it must run what Snakemake plans for the same change.
    stale, _ = _plan(root, "all")
    recorded = (root / "config.yaml").read_text()
    _set(root, "prompt", "epochs", lambda e: e + 1)
    epochs = yaml.safe_load((root / "config.yaml").read_text())["prompt"]["epochs"]
    planned, outputs = _plan(root, "all")
    (root / "config.yaml").write_text(recorded)
    assert planned["train_prompt"] and planned["counterfactual_shard"] == stale["counterfactual_shard"], (stale, planned)
    before = _files(root)
    out = run(DVC, "exp", "run", "-S", f"config.yaml:prompt.epochs={epochs}", "artifacts", "results", cwd=root, timeout=1800)
    ran, written = _jobs(out.stdout + out.stderr)
    assert "'artifacts' didn't change" in out.stdout, out.stdout[-2000:]
    assert ran == planned and written == outputs
    _assert_reuse(root, before, written)
    assert yaml.safe_load((root / "config.yaml").read_text())["prompt"]["epochs"] == epochs
    rows = list(csv.DictReader(io.StringIO(run(DVC, "exp", "show", "--no-pager", "--csv", cwd=root).stdout)))
    experiments = [r for r in rows if r["Experiment"]]
    assert [r["prompt.epochs"] for r in experiments] == [str(epochs)], rows
