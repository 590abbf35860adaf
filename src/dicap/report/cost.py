"""What each rule costs: Snakemake's ``benchmark:`` files summarised per rule.

Cluster users size ``mem_mb`` and ``runtime`` from this table instead of guessing, and
docs/cluster.md and docs/benchmarks.md quote it.  ``max_rss`` is the job's peak resident memory.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dicap.layout import benchmark_rule


def read_benchmarks(root: Path) -> pd.DataFrame:
    """One row per job: ``<root>/<rule>/.../<job>.tsv`` -> rule, wall seconds, peak RSS (MB)."""
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        frame = pd.read_csv(path, sep="\t")
        if frame.empty or not {"s", "max_rss"} <= set(frame.columns):
            raise ValueError(f"{path} is not a Snakemake benchmark file (needs columns s and max_rss)")
        last = frame.iloc[-1]  # a repeated benchmark keeps one line per repeat; the last is the latest
        rss = pd.to_numeric(last["max_rss"], errors="coerce")  # '-' when the job ended too fast to sample
        rows.append({"rule": benchmark_rule(path, root), "wall_s": float(last["s"]), "max_rss_mb": rss})
    return pd.DataFrame(rows, columns=["rule", "wall_s", "max_rss_mb"])


def cost_table(jobs: pd.DataFrame, suite: str) -> pd.DataFrame:
    """Per rule: job count, total / mean / max wall time and the largest peak memory."""
    table = jobs.groupby("rule").agg(
        jobs=("wall_s", "size"), wall_s_total=("wall_s", "sum"), wall_s_mean=("wall_s", "mean"),
        wall_s_max=("wall_s", "max"), max_rss_mb=("max_rss_mb", "max"),
    ).reset_index()
    table.insert(0, "suite", suite)
    return table.sort_values("wall_s_total", ascending=False).round(2).reset_index(drop=True)
