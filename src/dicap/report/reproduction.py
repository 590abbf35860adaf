"""Every regenerated number beside its reference value: ``results/reproduction.{csv,md}``.

A reproduction pipeline must never reuse its own numbers, so the workflow regenerates every
table and then compares it with ``results/reference/<suite>.csv``: numbers measured once, on
a named machine, by ``dicap record_reference``.  The comparison allows for what differs
between CPU models (float kernels, hence training trajectories), not for what a code change
does: see :data:`TOLERANCES` for the bounds and docs/reproduction.md for the measurements behind them.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dicap.io import atomic_output, package_versions, read_json, write_json, write_table
from dicap.report.markdown import markdown_table

KEY = ["table", "split", "dataset", "method", "metric"]


@dataclass(frozen=True)
class Tolerance:
    """``|value - reference| <= absolute + relative * |reference|``."""

    absolute: float
    relative: float = 0.0
    why: str = ""

    def bound(self, reference: float) -> float:
        return self.absolute + self.relative * abs(reference)


ACCURACY = Tolerance(6.0, why="accuracy points: two CPU models moved Table 1 by up to 4 on digits; seed std up to 2.5")
RATE = Tolerance(0.08, why="a share of images: the audit reads 80-240 counterfactuals, one image is 0.4-1.3%")
ERROR = Tolerance(0.0, 0.5, why="an error or loss: small and scale-free, compared relative to the reference")
EXACT = Tolerance(0.0, why="a count: identical on every machine")

TOLERANCES: dict[str, Tolerance] = {
    "base": ACCURACY, "novel": ACCURACY, "hm": ACCURACY,
    **{m: ACCURACY for m in ("aligned", "conflict", "gap", "novel_gap")},
    "worst_group": Tolerance(12.0, why="worst-group accuracy (points): the lowest of 5 classes' accuracies, seed std up to 11"),
    "counterfactuals": EXACT, "oracle_heldout_n": EXACT,
}


# Tables whose every number is a percentage, like Table 1's accuracies: recall@K, VQA accuracies.
PERCENT_TABLES = ("table2", "table3")


def tolerance(metric: str, table: str = "") -> Tolerance:
    """Accuracy points, shares, errors and counts each move by their own amount between CPUs."""
    if metric in TOLERANCES:
        return TOLERANCES[metric]
    if table in PERCENT_TABLES:
        return ACCURACY
    if metric.endswith(("mse", "loss")) or "mse_to_true" in metric:
        return ERROR
    return RATE


def _long(frame: pd.DataFrame, table: str, ids: list[str], skip: tuple[str, ...] = ()) -> pd.DataFrame:
    metrics = [c for c in frame.columns if c not in ids and c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
    out = frame.melt(id_vars=ids, value_vars=metrics, var_name="metric", value_name="value")
    out["table"] = table
    for column in KEY:
        if column not in out:
            out[column] = ""
    return out[[*KEY, "value"]]


def regenerated_numbers(table1: Path, backbones: Path | None = None, audit: Path | None = None,
                        shortcut: Path | None = None, tasks: dict[str, Path] | None = None) -> pd.DataFrame:
    """The numbers a run produced, one row each, keyed by table, split, dataset, method and metric.

    Standard deviations are left out: they describe the spread over seeds, not a result.
    """
    t1 = pd.read_csv(table1)
    parts = [_long(t1, "table1", ["split", "dataset", "method"], skip=("base_std", "novel_std", "hm_std"))]
    if backbones is not None:
        parts.append(_long(pd.read_csv(backbones), "backbones", ["dataset"]))
    if audit is not None:
        parts.append(_long(pd.read_csv(audit), "counterfactual_audit", ["dataset"], skip=("guidance_scale",)))
    if shortcut is not None:  # keyed by the variant in the split column: main, unbiased_shots, true_cf
        frame = pd.read_csv(shortcut).rename(columns={"variant": "split"})
        parts.append(_long(frame, "shortcut", ["split", "dataset", "method"], skip=tuple(c for c in frame if c.endswith("_std"))))
    for name, path in (tasks or {}).items():  # table2 (retrieval), table3 (VQA)
        frame = pd.read_csv(path)
        parts.append(_long(frame, name, ["split", "dataset", "method"], skip=tuple(c for c in frame if c.endswith("_std"))))
    numbers = pd.concat(parts, ignore_index=True)
    return numbers.dropna(subset=["value"]).reset_index(drop=True)


def task_tables(table2: Path | None, table3: Path | None) -> dict[str, Path]:
    """The task tables a run made, by name (a paper config may score neither task)."""
    return {name: path for name, path in (("table2", table2), ("table3", table3)) if path is not None}


def compare(numbers: pd.DataFrame, reference: pd.DataFrame | None) -> pd.DataFrame:
    """Join the regenerated numbers with the reference; ``within`` says whether each difference is allowed."""
    ref = reference if reference is not None else pd.DataFrame(columns=[*KEY, "value"])
    ref = ref.astype({k: str for k in KEY}).fillna({k: "" for k in KEY})
    merged = numbers.astype({k: str for k in KEY}).merge(
        ref[[*KEY, "value"]].rename(columns={"value": "reference"}), on=KEY, how="left")
    merged["difference"] = merged["value"] - merged["reference"]
    merged["tolerance"] = [tolerance(m, t).bound(r) if pd.notna(r) else np.nan
                           for m, t, r in zip(merged["metric"], merged["table"], merged["reference"])]
    merged["within"] = np.where(merged["reference"].isna(), "no reference",
                                np.where(merged["difference"].abs() <= merged["tolerance"] + 1e-9, "yes", "NO"))
    return merged.round(4)


def to_markdown(frame: pd.DataFrame, reference_machine: dict[str, Any] | None) -> str:
    inside = int((frame["within"] == "yes").sum())
    missing = int((frame["within"] == "no reference").sum())
    lines = ["# Reproduction against the reference numbers", ""]
    if reference_machine:
        lines.append(f"Reference measured on {describe_machine(reference_machine)}.")
    lines.append(f"This run: {describe_machine(machine())}.")
    lines += ["", f"**{inside} of {len(frame)} numbers are within tolerance**"
              + (f"; {missing} have no reference." if missing else "."), ""]
    outside = frame[frame["within"] == "NO"]
    if len(outside):
        lines += [f"Outside tolerance: {len(outside)}.", ""]
    numbers = ("value", "reference", "difference", "tolerance")
    rows = ([*(r[k] for k in KEY), *(_fmt(r[c]) for c in numbers), r["within"]] for _, r in frame.iterrows())
    lines += markdown_table([*KEY, *numbers, "within"], rows)
    lines += ["", "Tolerances (|difference| <= absolute + relative x |reference|):", ""]
    for tol in (ACCURACY, TOLERANCES["worst_group"], RATE, ERROR, EXACT):
        lines.append(f"- {tol.absolute:g} + {tol.relative:g} x |reference|: {tol.why}")
    return "\n".join(lines) + "\n"


def _fmt(x: float) -> str:
    return "" if pd.isna(x) else f"{x:.4g}"


def write_reproduction(frame: pd.DataFrame, out_csv: Path, out_md: Path, reference_machine: dict | None) -> None:
    write_table(out_csv, frame)
    with atomic_output(out_md) as tmp:
        tmp.write_text(to_markdown(frame, reference_machine))


# --- the reference ------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What a number depends on beyond the code: CPU model, cores, OS and package versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform(), "versions": package_versions()}


def describe_machine(info: dict[str, Any]) -> str:
    versions = info.get("versions", {})
    return (f"{info.get('cpu', '?')}, {info.get('cores', '?')} cores, torch {versions.get('torch', '?')}"
            + (f", {info['recorded']}" if "recorded" in info else ""))


def reference_paths(reference_csv: Path) -> tuple[Path, Path]:
    return reference_csv, reference_csv.with_suffix(".machine.json")


def read_reference(reference_csv: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    csv, meta = reference_paths(reference_csv)
    frame = pd.read_csv(csv, keep_default_na=False, na_values={"value": [""]}, dtype={k: str for k in KEY})
    missing = sorted(set([*KEY, "value"]) - set(frame.columns))
    if missing:
        raise ValueError(f"{csv} is not a reference file: no column {', '.join(missing)}")
    return frame, read_json(meta) if meta.exists() else {}


def record_reference(numbers: pd.DataFrame, reference_csv: Path, provenance_json: Path) -> None:
    """Freeze a run's numbers as the reference, with the machine and config they came from."""
    csv, meta = reference_paths(reference_csv)
    write_table(csv, numbers)
    info = machine() | {
        "recorded": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "config_hash": read_json(provenance_json).get("config_hash"),
    }
    write_json(meta, info)
