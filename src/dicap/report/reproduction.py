"""Every regenerated number beside its reference value: ``results/reproduction.{csv,md}``.

A reproduction pipeline must never reuse its own numbers, so the workflow regenerates every
table and then compares it with ``results/reference/<suite>.csv``: numbers measured once, on
a named machine, by ``dicap record_reference``.  The comparison allows for what differs
between CPU models (float kernels, hence training trajectories), not for what a code change
does.  A mean over seeds may move by a few of its seed standard errors (:data:`SEED_K`, plus
a floor per kind); a number without a seed spread keeps a fixed bound (:data:`TOLERANCES`).
The report ends with a verdict in words: how far the numbers outside are, and whether a
different CPU explains it (docs/reproduction.md).
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

from dicap.cpu import SIMD_FLAGS, cpu, kernels, pinned
from dicap.io import atomic_output, package_versions, read_json, read_table, write_json, write_table
from dicap.report.markdown import markdown_table
from dicap.report.table import is_spread

KEY = ["table", "split", "dataset", "method", "metric"]
SPREAD = ["std", "n"]  # a number's sample std over seeds and the seed count; empty where its table has no per-seed values

SEED_K = 3.0
"""How many seed standard errors a mean over seeds may move between two runs.  On another CPU
a training run follows another trajectory, so its mean over seeds differs from the
reference's like the means of two seed draws: the standard error of that difference is
``sqrt(s_ref**2 / n_ref + s_run**2 / n_run)``.  Three of them bound it for a normal mean
(0.3% outside), but with 3 seeds each std is itself rough (about 4 degrees of freedom: 4%
outside), hence the floor below and the verdict's wider :data:`CPU_SE`."""

CPU_SE = 5.0
"""The verdict's line between a different CPU's move and a change: beyond 5 seed standard
errors a difference is rare even with stds from 3 seeds (under 1% at 4 degrees of freedom)."""

ACCURACY_FLOOR = 0.5
"""Accuracy points added to the seed bound: a split's base or novel half holds 300 test
images in the embedded suite, one is 0.33 points, and a mean within 1.5 images is no result,
whatever the seeds' spread (seeds that all agree give a standard error of 0)."""

WORST_GROUP_FLOOR = 2.0
"""Worst-group accuracy's floor (points): it is one class's accuracy over 60 images, where
one image is 1.7 points."""

SHARE_FLOOR = 0.01
"""The floor of a share in [0, 1]: one point of a percentage."""


@dataclass(frozen=True)
class Tolerance:
    """``|value - reference| <= absolute + relative * |reference|``, or, for a mean over seeds
    with a seed spread in the run and the reference, ``SEED_K * se + floor``.  A kind without
    a floor (errors, counts) never scales with the seeds."""

    absolute: float
    relative: float = 0.0
    why: str = ""
    floor: float | None = None

    def bound(self, reference: float) -> float:
        return self.absolute + self.relative * abs(reference)

    def seed_bound(self, se: float) -> float:
        return SEED_K * se + (self.floor or 0.0)


ACCURACY = Tolerance(6.0, why="accuracy points: two CPU models moved Table 1 by up to 4 on digits; seed std up to 2.5",
                     floor=ACCURACY_FLOOR)
RATE = Tolerance(0.08, why="a share of images: the audit reads 80-240 counterfactuals, one image is 0.4-1.3%",
                 floor=SHARE_FLOOR)
ERROR = Tolerance(0.0, 0.5, why="an error or loss: small and scale-free, compared relative to the reference")
EXACT = Tolerance(0.0, why="a count: identical on every machine")

TOLERANCES: dict[str, Tolerance] = {
    "base": ACCURACY, "novel": ACCURACY, "hm": ACCURACY, "accuracy": ACCURACY, "delta": ACCURACY,
    **{m: ACCURACY for m in ("aligned", "conflict", "gap", "novel_gap")},
    "worst_group": Tolerance(12.0, why="worst-group accuracy (points): the lowest of 5 classes' accuracies, seed std up to 11",
                             floor=WORST_GROUP_FLOOR),
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


def _seed_counts(frame: pd.DataFrame) -> pd.Series:
    """How many seeds each row averages: the words of its ``seeds`` column ("1 2 3"), else its
    ``n`` (a paired comparison's seed count); NaN without either."""
    if "seeds" not in frame:
        return frame["n"].astype(float) if "n" in frame else pd.Series(np.nan, index=frame.index)
    return frame["seeds"].astype(str).str.split().str.len().astype(float)


def _long(frame: pd.DataFrame, table: str, ids: list[str], skip: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per number, with its seed std (``<metric>_std``) and seed count where the table has them."""
    spread = {c for c in frame.columns if c.endswith("_std")}
    seeds = _seed_counts(frame)
    frame = frame.drop(columns=[c for c in frame.columns if is_spread(c) and c not in spread])
    metrics = [c for c in frame.columns if c not in ids and c not in skip and c not in spread and c != "seeds"
               and pd.api.types.is_numeric_dtype(frame[c])]
    parts = []
    for metric in metrics:
        std = frame[f"{metric}_std"].astype(float) if f"{metric}_std" in spread else pd.Series(np.nan, index=frame.index)
        parts.append(frame[ids].assign(metric=metric, value=frame[metric], std=std, n=seeds.where(std.notna())))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*ids, "metric", "value", *SPREAD])
    out["table"] = table
    for column in KEY:
        if column not in out:
            out[column] = ""
    return out[[*KEY, "value", *SPREAD]]


def regenerated_numbers(table1: Path, backbones: Path | None = None, audit: Path | None = None,
                        shortcut: Path | None = None, tasks: dict[str, Path] | None = None,
                        transfer: dict[str, Path] | None = None) -> pd.DataFrame:
    """The numbers a run produced, one row each, keyed by table, split, dataset, method and metric.

    Standard deviations are no numbers of their own: they describe the spread over seeds, and
    ride beside their mean (``std``, with the seed count ``n``) to size its tolerance.
    """
    parts = [_long(read_table(table1), "table1", ["split", "dataset", "method"])]
    if backbones is not None:
        parts.append(_long(read_table(backbones), "backbones", ["dataset"]))
    if audit is not None:
        parts.append(_long(read_table(audit), "counterfactual_audit", ["dataset"], skip=("guidance_scale",)))
    if shortcut is not None:  # keyed by the variant in the split column: main, unbiased_shots, true_cf
        parts.append(_long(read_table(shortcut).rename(columns={"variant": "split"}), "shortcut", ["split", "dataset", "method"]))
    for name, path in (tasks or {}).items():  # table2 (retrieval), table3 (VQA)
        parts.append(_long(read_table(path), name, ["split", "dataset", "method"]))
    for name, path in (transfer or {}).items():  # domain_generalization, cross_dataset: keyed by domain in the split column
        parts.append(_long(transfer_rows(read_table(path)), name, ["split", "dataset", "method"]))
        paired = path.with_name(f"{path.stem}_paired.csv")  # written beside it by the same job (report/transfer.py)
        parts.append(_long(paired_rows(read_table(paired)), f"{name}_paired", ["split", "dataset", "method"]))
    numbers = pd.concat(parts, ignore_index=True)
    return numbers.dropna(subset=["value"]).reset_index(drop=True)


def _run(frame: pd.DataFrame) -> pd.Series:
    """Each transfer row's run, named as its table names it (:func:`dicap.report.transfer.run_name`)."""
    from dicap.report.transfer import run_name

    return pd.Series([run_name(v, m) for v, m in zip(frame["variant"], frame["method"])], index=frame.index, dtype=object)


def transfer_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """A transfer table keyed like the others: its domain in the split column, the run in the method column."""
    return frame.drop(columns=["variant", "domain"]).assign(split=frame["domain"], method=_run(frame))


def paired_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """A transfer table's paired comparisons keyed like its numbers: the run and its baseline
    in the method column (``dicap (true_cf) − coop``), the per-seed difference as ``delta``."""
    return pd.DataFrame({"split": frame["domain"], "dataset": frame["dataset"], "method": _run(frame) + " − " + frame["baseline"],
                         "delta": frame["delta"], "delta_std": frame["delta_std"], "n": frame["n"]})


def named_tables(**tables: Path | None) -> dict[str, Path]:
    """The optional tables a run made, by name (a paper config may score no task, no transfer)."""
    return {name: path for name, path in tables.items() if path is not None}


def _spread_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` keyed by strings, with ``std`` and ``n`` as floats (NaN in a file recorded before them)."""
    frame = frame.reindex(columns=[*KEY, "value", *SPREAD])
    return frame.astype({**{k: str for k in KEY}, "value": float, "std": float, "n": float}).fillna({k: "" for k in KEY})


def compare(numbers: pd.DataFrame, reference: pd.DataFrame | None) -> pd.DataFrame:
    """Join the regenerated numbers with the reference; ``within`` says whether each difference is allowed.

    ``se`` is the seed standard error of the difference, ``sqrt(std_ref**2 / n_ref + std**2 / n)``,
    where both sides average 2 or more seeds and their seeds disagree; there the tolerance is
    ``SEED_K * se + floor`` and ``distance`` is ``|difference| / se``.  Elsewhere (``rule``
    "fixed") the tolerance is the kind's fixed bound.
    """
    ref = _spread_columns(reference if reference is not None else pd.DataFrame(columns=KEY))
    ref = ref.rename(columns={"value": "reference", "std": "reference_std", "n": "reference_n"})
    merged = _spread_columns(numbers).merge(ref, on=KEY, how="left")
    merged["difference"] = merged["value"] - merged["reference"]
    kinds = [tolerance(m, t) for m, t in zip(merged["metric"], merged["table"])]
    se = np.sqrt(merged["reference_std"] ** 2 / merged["reference_n"] + merged["std"] ** 2 / merged["n"])
    seeded = ((merged["reference_n"] >= 2) & (merged["n"] >= 2) & (se > 0)
              & pd.Series([k.floor is not None for k in kinds], index=merged.index))
    merged["se"] = se.where(seeded)
    merged["tolerance"] = [k.seed_bound(e) if s else k.bound(r) if pd.notna(r) else np.nan
                           for k, s, e, r in zip(kinds, seeded, se, merged["reference"])]
    merged["distance"] = merged["difference"].abs() / merged["se"]
    known = merged["reference"].notna()
    merged["rule"] = np.where(~known, "", np.where(seeded, "seeds", "fixed"))
    merged["within"] = np.where(~known, "no reference",
                                np.where(merged["difference"].abs() <= merged["tolerance"] + 1e-9, "yes", "NO"))
    return merged.round(4)


# --- the verdict ----------------------------------------------------------------------------


def same_cpu(reference: dict[str, Any] | None, run: dict[str, Any]) -> bool | None:
    """Whether two machine records name the same CPU (vendor, family, model and SIMD flags);
    None where either does not name it that precisely (a record made before it did)."""
    cpus = [(info or {}).get("cpu") for info in (reference, run)]
    if not all(isinstance(c, dict) and None not in (c.get("vendor"), c.get("family"), c.get("model")) and c.get("simd")
               for c in cpus):
        return None
    fields = ("vendor", "family", "model", "simd")
    return all(cpus[0][f] == cpus[1][f] for f in fields)


def _name(row: pd.Series) -> str:
    return " ".join(str(row[k]) for k in KEY if row[k])


def _how_far(row: pd.Series) -> str:
    if row["rule"] == "seeds":
        return f"{row['distance']:.1f} seed standard errors (se {row['se']:.3g})"
    return f"outside its fixed bound of {row['tolerance']:.3g} (no seed spread to size it by)"


def verdict(frame: pd.DataFrame, reference_machine: dict[str, Any] | None, run_machine: dict[str, Any]) -> list[str]:
    """The report's last section, in words: computed from the rows, never typed."""
    compared = frame[frame["within"] != "no reference"]
    lines = ["## Verdict", ""]
    if compared.empty:
        return [*lines, "No reference to compare with: nothing here is judged."]
    outside = compared[compared["within"] == "NO"]
    same = same_cpu(reference_machine, run_machine)
    run_cpu, reference_cpu = describe_cpu(run_machine.get("cpu")), describe_cpu((reference_machine or {}).get("cpu"))
    if same:
        cpus = f"this run on the reference's CPU, {run_cpu}"
    else:
        cpus = f"reference on {reference_cpu}; this run on {run_cpu}"
        if pinned(reference_machine) and pinned(run_machine):  # dicap.cpu: far fewer numbers move
            cpus += "; both with torch's CPU kernels pinned to AVX2"
    lines.append(f"{len(compared)} numbers compared, {len(outside)} outside their tolerance.")
    if same is None:
        lines += ["", "The reference's machine record does not name its CPU precisely (recorded before it did: "
                  "re-record it with `dicap record_reference`), so this verdict takes the CPUs as different."]
    if outside.empty:
        return [*lines, "", f"**Reproduced**: every number is within its tolerance ({cpus})."]
    lines += ["", *(f"- `{_name(r)}`: {r['value']:.4g} against {r['reference']:.4g} (difference {r['difference']:+.3g}), "
                    f"{_how_far(r)}" for _, r in outside.iterrows()), ""]
    beyond = outside[~((outside["rule"] == "seeds") & (outside["distance"] <= CPU_SE))]
    if same:
        lines.append(f"**Unexpected: a code or data change, not hardware** ({cpus}). On the same CPU every number "
                     "comes back exactly, so a number outside its tolerance was changed by the code, the config or the data.")
    elif beyond.empty:
        lines.append(f"**Expected on a different CPU** ({cpus}): every number outside is within {CPU_SE:g} seed "
                     "standard errors, the move other float kernels give a training run.")
    else:
        lines.append(f"**Larger than CPU differences explain** ({cpus}): {len(beyond)} of the {len(outside)} numbers "
                     f"outside are beyond {CPU_SE:g} seed standard errors or have no seed spread (their fixed bound "
                     "already allows for measured CPU differences): look for a code, config or data change.")
    return lines


def to_markdown(frame: pd.DataFrame, reference_machine: dict[str, Any] | None,
                run_machine: dict[str, Any] | None = None) -> str:
    run_machine = run_machine if run_machine is not None else machine()
    inside = int((frame["within"] == "yes").sum())
    missing = int((frame["within"] == "no reference").sum())
    lines = ["# Reproduction against the reference numbers", ""]
    if reference_machine:
        lines.append(f"Reference measured on {describe_machine(reference_machine)}.")
    lines.append(f"This run: {describe_machine(run_machine)}.")
    lines += ["", f"**{inside} of {len(frame)} numbers are within tolerance**"
              + (f"; {missing} have no reference." if missing else "."), ""]
    outside = frame[frame["within"] == "NO"]
    if len(outside):
        lines += [f"Outside tolerance: {len(outside)}.", ""]
    numbers = ("value", "reference", "difference", "se", "tolerance", "distance")
    rows = ([*(r[k] for k in KEY), *(_fmt(r[c]) for c in numbers), r["rule"], r["within"]] for _, r in frame.iterrows())
    lines += markdown_table([*KEY, *numbers, "rule", "within"], rows)
    lines += ["", f"Tolerances. A mean over seeds (rule `seeds`): |difference| <= {SEED_K:g} x se + floor, where "
              "se = sqrt(std_ref^2 / n_ref + std^2 / n) is the seed standard error of the difference and `distance` "
              f"is |difference| / se; the floor is {ACCURACY_FLOOR:g} accuracy points ({WORST_GROUP_FLOOR:g} for "
              f"worst-group accuracy) or {SHARE_FLOOR:g} of a share. Every other number (rule `fixed`: no seed spread, "
              "or an error, a loss or a count): |difference| <= absolute + relative x |reference|:", ""]
    for tol in (ACCURACY, TOLERANCES["worst_group"], RATE, ERROR, EXACT):
        lines.append(f"- {tol.absolute:g} + {tol.relative:g} x |reference|: {tol.why}")
    if frame["reference"].notna().any() and frame["reference_n"].isna().all():
        lines += ["", "The reference records no seed spread (no `std` and `n` columns: it was recorded before them), "
                  "so every number is held to the fixed bounds; re-record it with `dicap record_reference` "
                  "(docs/reproduction.md)."]
    return "\n".join([*lines, "", *verdict(frame, reference_machine, run_machine)]) + "\n"


def _fmt(x: float) -> str:
    return "" if pd.isna(x) else f"{x:.4g}"


def write_reproduction(frame: pd.DataFrame, out_csv: Path, out_md: Path, reference_machine: dict | None) -> None:
    write_table(out_csv, frame)
    with atomic_output(out_md) as tmp:
        tmp.write_text(to_markdown(frame, reference_machine))


# --- the machine ----------------------------------------------------------------------------


def describe_cpu(info: dict[str, Any] | str | None) -> str:
    """``AMD EPYC (AuthenticAMD family 25 model 1; avx2 fma; no avx512f ...)``; an older record's plain name as it is."""
    if not isinstance(info, dict):
        return str(info or "?")
    ident = " ".join([str(info["vendor"])] * bool(info.get("vendor"))
                     + [f"{key} {info[key]}" for key in ("family", "model") if info.get(key) is not None])
    simd = info.get("simd") or {}
    order = sorted(simd, key=lambda f: (SIMD_FLAGS.index(f) if f in SIMD_FLAGS else len(SIMD_FLAGS), f))  # JSON sorts keys
    has = " ".join(f for f in order if simd[f])
    lacks = " ".join(f for f in order if not simd[f])
    details = "; ".join(p for p in (ident, has, f"no {lacks}" if lacks else "") if p)
    return f"{info.get('model_name') or '?'}" + (f" ({details})" if details else "")


def machine() -> dict[str, Any]:
    """What a number depends on beyond the code: the CPU (:func:`cpu`), the kernel variables in
    effect (dicap.cpu.kernels), cores, OS and package versions."""
    return {"cpu": cpu(), "kernels": kernels(), "cores": os.cpu_count(), "system": platform.platform(),
            "versions": package_versions()}


def describe_machine(info: dict[str, Any]) -> str:
    versions = info.get("versions", {})
    return (f"{describe_cpu(info.get('cpu'))}, {info.get('cores', '?')} cores, torch {versions.get('torch', '?')}"
            + (" (CPU kernels pinned to AVX2)" if pinned(info) else "")
            + (f", {info['recorded']}" if "recorded" in info else ""))


def reference_paths(reference_csv: Path) -> tuple[Path, Path]:
    return reference_csv, reference_csv.with_suffix(".machine.json")


def read_reference(reference_csv: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The reference numbers and their machine record.  A file recorded before the seed spread
    has no ``std`` and ``n`` columns: it reads, and its numbers keep the fixed bounds."""
    csv, meta = reference_paths(reference_csv)
    frame = pd.read_csv(csv, keep_default_na=False, na_values={c: [""] for c in ("value", *SPREAD)},
                        dtype={k: str for k in KEY})
    missing = sorted(set([*KEY, "value"]) - set(frame.columns))
    if missing:
        raise ValueError(f"{csv} is not a reference file: no column {', '.join(missing)}")
    return frame, read_json(meta) if meta.exists() else {}


def record_reference(numbers: pd.DataFrame, reference_csv: Path, provenance_json: Path) -> None:
    """Freeze a run's numbers, each with its seed std and count, as the reference, with the
    machine (its CPU named precisely) and config they came from."""
    csv, meta = reference_paths(reference_csv)
    write_table(csv, numbers.astype({"n": "Int64"}) if "n" in numbers else numbers)
    info = machine() | {
        "recorded": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "config_hash": read_json(provenance_json).get("config_hash"),
    }
    write_json(meta, info)
