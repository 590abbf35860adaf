"""Wall time of every stage of the embedded suite, measured in one run.

    python benchmarks/embedded_stage_times.py                 # fresh run in a temp dir
    python benchmarks/embedded_stage_times.py --workdir .     # summarise an existing run
    python benchmarks/embedded_stage_times.py --configfile tests/config.test.yaml

A fresh run executes the whole workflow from nothing with ``--cores 2``, then runs it again
to time the no-op rerun, then sums Snakemake's per-job ``benchmark:`` files by rule.  The
job times add up to more than the wall time because two jobs run at once.  Jobs run by the
warm worker (dicap.worker) show the ``dicap`` client's memory in ``peak_rss_mb``, not the
job's; ``DICAP_WARM=0`` measures the jobs' own.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def run_workflow(workdir: Path, configfiles: list[str], cores: int) -> float:
    bin_dir = Path(sys.executable).parent
    cmd = [str(bin_dir / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", str(cores), "--configfile", str(REPO / "config.yaml"), *configfiles, "-q"]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def stage_table(workdir: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted((workdir / "logs" / "benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(workdir / "logs" / "benchmarks").parts[0].removesuffix(".tsv")
        bench = pd.read_csv(tsv, sep="\t")
        rows.append({"rule": rule, "s": bench["s"].iloc[-1], "max_rss_mb": bench["max_rss"].iloc[-1]})
    jobs = pd.DataFrame(rows)
    return (
        jobs.groupby("rule", sort=False)
        .agg(jobs=("s", "size"), total_s=("s", "sum"), max_job_s=("s", "max"), peak_rss_mb=("max_rss_mb", "max"))
        .sort_values("total_s", ascending=False)
        .round(1)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="summarise this finished run instead of starting one")
    parser.add_argument("--configfile", action="append", default=[], help="extra config merged over config.yaml")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    if args.workdir:
        print(stage_table(args.workdir).to_string())
        return
    with tempfile.TemporaryDirectory(prefix="dicap-bench-") as tmp:
        workdir = Path(tmp)
        full = run_workflow(workdir, [str(Path(c).resolve()) for c in args.configfile], args.cores)
        noop = run_workflow(workdir, [str(Path(c).resolve()) for c in args.configfile], args.cores)
        print(stage_table(workdir).to_string())
        print(f"\nfull run from nothing: {full:.1f} s wall on {args.cores} cores")
        print(f"rerun with nothing to do: {noop:.1f} s wall")
        print(f"ratio full / no-op: {full / noop:.1f}")


if __name__ == "__main__":
    main()
