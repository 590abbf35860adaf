"""What limits counterfactual quality? Audit one seed of ``shapes`` under changed generators.

    python benchmarks/generator_limits.py                 # all experiments, seed 1 of shapes
    python benchmarks/generator_limits.py depth-0.6 longer-training

Each experiment is a config override; it runs the real workflow in its own directory
(under ``--workdir``), reusing this checkout's built data, CLIP, oracle and, where its
override leaves them alone, diffusion model (copied with their timestamps, so Snakemake
sees them as up to date).  It prints the audit of the main variant and of the extra
guidance scales next to the checkout's own, so each row differs from the default in one thing.
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
sys.path.insert(0, str(REPO / "src"))

from dicap import layout  # noqa: E402  (the build tree's paths and variant names)

BUILD = layout.Build("embedded")
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


def run(name: str, override: dict, workdir: Path, dataset: str, seed: int, guidance_scales: list[float], cores: int) -> pd.DataFrame:
    """Audit ``dataset``'s seed ``seed`` at each guidance scale in ``guidance_scales`` with ``override`` applied."""
    config = merged(yaml.safe_load((REPO / "config.yaml").read_text()), {"datasets": [dataset], "seeds": [seed], **override})
    wd = workdir / name
    # a backbone's folder holds its model and the files it declares beside it (report, text features)
    folder = lambda template: str(Path(BUILD(template, dataset=dataset)).parent)  # noqa: E731
    for part in (BUILD.root + "/data", BUILD.root + "/splits", folder(layout.CLIP_MODEL), folder(layout.ORACLE_MODEL)):
        if not (wd / part).exists():
            shutil.copytree(REPO / part, wd / part, copy_function=shutil.copy2)
    model = wd / folder(layout.DIFFUSION_MODEL)
    if not model.exists():  # reuse a diffusion model trained with the same settings, here or by a sibling experiment
        for source in [REPO, *sorted(workdir.iterdir())]:
            trained = source / folder(layout.DIFFUSION_MODEL)
            same = yaml.safe_load((source / "config.yaml").read_text())["diffusion"] == config["diffusion"]
            if source != wd and trained.exists() and same:
                shutil.copytree(trained, model, copy_function=shutil.copy2)
                break
    (wd / "config.yaml").write_text(yaml.safe_dump(config))
    variants = list(dict.fromkeys([layout.MAIN, *(layout.guidance_variant(s, config["counterfactual"]) for s in guidance_scales)]))
    targets = [BUILD(layout.AUDIT, dataset=dataset, variant=v, seed=seed) for v in variants]
    cmd = [sys.executable, "-m", "snakemake", *targets, "-s", str(REPO / "Snakefile"), "--configfile", str(wd / "config.yaml"),
           "--directory", str(wd), "--cores", str(cores), "--rerun-triggers", "mtime", "params", "--quiet", "rules"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(cmd, check=True, env=env)
    rows = []
    for variant, target in zip(variants, targets):
        audit = pd.read_parquet(wd / target)
        rows.append({"experiment": name, "guidance_scale": float(audit["guidance_scale"].iloc[0]), **audit[COLUMNS].mean().round(3).to_dict()})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--guidance-scales", type=float, nargs="+", default=[3.0, 5.0, 10.0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dicap-generator-limits"))
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    frames = [run(n, EXPERIMENTS[n], args.workdir, args.dataset, args.seed, args.guidance_scales, args.cores) for n in args.experiments]
    table = pd.concat(frames, ignore_index=True)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"\naudit of {args.dataset}, seed {args.seed} (each experiment changes one thing from config.yaml):")
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
