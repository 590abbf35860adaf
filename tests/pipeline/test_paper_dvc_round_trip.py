"""DVC over the paper suite: the cluster-to-laptop split of docs/dvc.md, with the paper suite's
tiny stand-ins (test_paper_pipeline.py) in a checkout of its own.

The cluster runs `dvc repro paper/dvc.yaml` (its SLURM profile replaced by a local one of the
same name) and pushes; a fresh clone runs `bash scripts/pull.sh paper` and regenerates Tables 1
and 2 from the pulled per-seed metrics, with no image on disk: `evaluate` scores MaPLe on the test
images, which never leave the cluster.
"""

from __future__ import annotations

import hashlib
import shutil

import yaml

from dicap.testing.tiny_models import save_clip_text_encoder, save_latent_checkpoint, save_tiny_clip
from local_mirror import captioned_flickr, dtd_archive, local_registry, zip_bytes
from snakemake_runner import BIN, DVC, DVC_ENV, REPO, job_counts, run, tiny_checkout

TABLES = ("results/table1.csv", "results/table2.csv")
CONFIGS = ("--configfile", "config.yaml", "config.paper.yaml")  # as docs/dvc.md types them: targets first


def _merge(base: dict, over: dict) -> dict:
    return {**base, **{k: _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                       for k, v in over.items()}}


def _paper_checkout(dest, tmp_path) -> None:
    """This checkout with config.paper.yaml at stand-in size and a local profile named `slurm`."""
    tiny_checkout(dest)
    shutil.copy2(REPO / "config.yaml", dest / "config.yaml")  # tiny_checkout's is the embedded suite's
    sd = save_clip_text_encoder(save_latent_checkpoint(tmp_path / "sd"))
    clip = save_tiny_clip(tmp_path / "clip")
    override = {
        "datasets": ["dtd"], "seeds": [1], "methods": ["coop", "maple"],
        "data": {"image_size": 16, "shots": 2, "val_shots": 1},  # data.root stays data/paper: the source stages' outputs
        "clip": {"pretrained": {"model": f"local-dir:{clip}", "tag": None, "cache_dir": None}},
        "diffusion": {"pretrained": {"path": str(sd), "cache_dir": None, "dtype": "float32", "image_size": 16,
                                     "template": "a photo of a {}."}},
        "counterfactual": {"steps": 4, "shards": 2, "images_per_shard": None, "batch_size": 8},
        "prompt": {"epochs": 2, "batch_size": 4, "learners": {
            "maple": {"n_ctx": 2, "ctx_init": "a photo", "depth": 9, "epochs": 1, "batch_size": 4, "lr": 0.0035}}},
        "tasks": {"methods": ["zeroshot", "coop"], "percent": 20, "datasets": {"retrieval": ["flickr30k"], "vqa": []}},
    }
    paper = yaml.safe_load((REPO / "config.paper.yaml").read_text())
    (dest / "config.paper.yaml").write_text(yaml.safe_dump(_merge(paper, override), sort_keys=False))
    (dest / "slurm" / "config.yaml").write_text(yaml.safe_dump(
        {"configfile": ["config.yaml", "config.paper.yaml"], "cores": 2, "rerun-incomplete": True}))


def _venv(tmp_path, checkout) -> str:
    """A DICAP_VENV that is this interpreter's, stamped for the checkout's pyproject.toml, so
    scripts/setup.sh (run by pull.sh) finds it current and installs nothing."""
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "bin").symlink_to(BIN)
    (venv / ".dicap-install-stamp").write_text(hashlib.sha256((checkout / "pyproject.toml").read_bytes()).hexdigest() + "\n")
    return str(venv)


def test_paper_cluster_to_laptop_round_trip(server, tmp_path):
    origin, clone, remote = tmp_path / "origin", tmp_path / "clone", tmp_path / "remote"
    origin.mkdir()
    _paper_checkout(origin, tmp_path)
    karpathy, flickr_tar = captioned_flickr(n_train=30, n_val=1, n_test=6)
    archive, split_file = dtd_archive()
    registry = local_registry(server, ["dtd", "flickr30k"], {
        "dtd-r1.0.1.tar.gz": archive, "split_zhou_DescribableTextures.json": split_file,
        "caption_datasets.zip": zip_bytes({"dataset_flickr30k.json": karpathy}), "flickr30k-images.tar.gz": flickr_tar})
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(registry))
    placed = origin / "data" / "paper" / "flickr30k" / "downloads"
    placed.mkdir(parents=True)
    (placed / "flickr30k-images.tar.gz").write_bytes(flickr_tar)  # the licence-gated archive, placed by hand
    laptop = {**DVC_ENV, "DICAP_VENV": _venv(tmp_path, origin)}
    cluster = {**laptop, "DICAP_REGISTRY": str(tmp_path / "registry.yaml"), "DICAP_MIRROR": server.base}
    git = ("git", "-c", "user.name=t", "-c", "user.email=t@t")
    run("git", "init", "-q", cwd=origin)
    run(DVC, "remote", "modify", "--local", "local", "url", str(remote), cwd=origin)
    run(*git, "add", "-A", cwd=origin)
    run(*git, "commit", "-qm", "tiny paper", cwd=origin)

    # on the cluster (docs/dvc.md): dvc repro paper/dvc.yaml; dvc push; commit paper/dvc.lock
    run(DVC, "repro", "paper/dvc.yaml", cwd=origin, env=cluster, timeout=3000)
    assert run(DVC, "status", "paper/dvc.yaml", cwd=origin, env=cluster).stdout.strip() == "Data and pipelines are up to date."
    assert list((origin / "build/paper/metrics/dtd/main").glob("seed1.csv")) and not (origin / "results" / "table1.csv").exists()
    run(DVC, "push", cwd=origin)
    run(*git, "add", "paper/dvc.lock", cwd=origin)
    run(*git, "commit", "-qm", "paper artifacts", cwd=origin)
    run(str(BIN / "snakemake"), "--cores", "2", *TABLES, *CONFIGS, cwd=origin, env=cluster, timeout=600)
    tables = {t: (origin / t).read_bytes() for t in TABLES}
    shutil.move(origin / "data", tmp_path / "cluster-data")  # no path back to the cluster's images

    # on the laptop: git clone (pull), bash scripts/pull.sh paper, the tables
    run("git", "clone", "-q", str(origin), str(clone), cwd=tmp_path)
    run(DVC, "remote", "modify", "--local", "local", "url", str(remote), cwd=clone)
    run("bash", "scripts/pull.sh", "paper", cwd=clone, env=laptop)
    assert run(DVC, "status", "paper/dvc.yaml", cwd=clone, env=laptop).stdout.strip() == "Data and pipelines are up to date."
    pulled = {p.relative_to(clone / "data").as_posix() for p in (clone / "data").rglob("*") if p.is_file()}
    assert pulled == {"paper/dtd/READY.json"}, sorted(pulled)[:10]  # source@dtd's marker, no image
    plan = run(str(BIN / "snakemake"), "-n", *TABLES, *CONFIGS, cwd=clone, env=laptop)
    assert job_counts(plan.stdout) == {"table1": 1, "task_table": 1}, plan.stdout[-3000:]
    run(str(BIN / "snakemake"), "--cores", "4", *TABLES, *CONFIGS, cwd=clone, env=laptop, timeout=600)
    for table, want in tables.items():
        assert (clone / table).read_bytes() == want, table
