"""What limits counterfactual quality? Audit one seed of ``shapes`` under changed generators.

    python benchmarks/generator_limits.py                 # all experiments, seed 1 of shapes
    python benchmarks/generator_limits.py depth-0.6 longer-training

Each experiment is a config override; it runs the real workflow in its own directory
(under ``--workdir``), reusing this checkout's built data, CLIP, oracle and, where its
override leaves them alone, diffusion model (copied with their timestamps, so Snakemake
sees them as up to date).  It prints the audit of the main variant and of the extra
scales next to the checkout's own, so each row differs from the default in one thing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
BUILD = "build/embedded"
COLUMNS = ["valid", "kept_background", "kept_object_colour", "kept_position", "kept_scale", "faithful", "mse_to_true"]
EXPERIMENTS: dict[str, dict] = {
    "default": {},
    "depth-0.6": {"counterfactual": {"inversion_depth": 0.6}},
    "depth-0.9": {"counterfactual": {"inversion_depth": 0.9}},
    "classifier-guide": {"counterfactual": {"guide": "classifier"}},
    "longer-training": {"diffusion": {"train": {"steps": 1600}}},
    "longer-training-depth-0.6": {"diffusion": {"train": {"steps": 1600}}, "counterfactual": {"inversion_depth": 0.6}},
}


def merged(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def run(name: str, override: dict, workdir: Path, dataset: str, seed: int, scales: list[float], cores: int) -> pd.DataFrame:
    config = merged(yaml.safe_load((REPO / "config.yaml").read_text()), {"datasets": [dataset], "seeds": [seed], **override})
    wd = workdir / name
    for part in ("data", "splits", f"models/{dataset}/clip", f"models/{dataset}/oracle"):
        if not (wd / BUILD / part).exists():
            shutil.copytree(REPO / BUILD / part, wd / BUILD / part, copy_function=shutil.copy2)
    model = wd / BUILD / f"models/{dataset}/diffusion"
    if not model.exists():  # reuse a diffusion model trained with the same settings, here or by a sibling experiment
        for source in [REPO, *sorted(workdir.iterdir())]:
            trained = source / BUILD / f"models/{dataset}/diffusion"
            same = yaml.safe_load((source / "config.yaml").read_text())["diffusion"] == config["diffusion"]
            if source != wd and trained.exists() and same:
                shutil.copytree(trained, model, copy_function=shutil.copy2)
                break
    (wd / "config.yaml").write_text(yaml.safe_dump(config))
    s0 = float(config["counterfactual"]["scale"])
    variants = ["main"] + [f"s{s:g}" for s in scales if s != s0]
    targets = [f"{BUILD}/audit/{dataset}/{v}/seed{seed}.parquet" for v in variants]
    cmd = [sys.executable, "-m", "snakemake", *targets, "-s", str(REPO / "Snakefile"), "--configfile", str(wd / "config.yaml"),
           "--directory", str(wd), "--cores", str(cores), "--rerun-triggers", "mtime", "params", "--quiet", "rules"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(cmd, check=True, env=env)
    rows = []
    for variant, target in zip(variants, targets):
        audit = pd.read_parquet(wd / target)
        rows.append({"experiment": name, "s": float(audit["s"].iloc[0]), **audit[COLUMNS].mean().round(3).to_dict()})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scales", type=float, nargs="+", default=[3.0, 5.0, 10.0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dicap-generator-limits"))
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    frames = [run(n, EXPERIMENTS[n], args.workdir, args.dataset, args.seed, args.scales, args.cores) for n in args.experiments]
    table = pd.concat(frames, ignore_index=True)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"\naudit of {args.dataset}, seed {args.seed} (each experiment changes one thing from config.yaml):")
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
