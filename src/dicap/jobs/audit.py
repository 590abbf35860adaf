"""Jobs of rules/audit.smk: the independent oracle and the counterfactual audit (embedded suite).

Each function is the rule of the same name.  The audit judges every generated counterfactual
with an oracle against the true counterfactual the structural causal model renders.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

log = logging.getLogger(__name__)

__all__ = ["oracle", "audit_counterfactuals", "audit_summary"]


def oracle(
    dataset_dir: Path,
    params: Annotated[dict[str, Any], "the config's oracle.train block"],
    out: Annotated[Path, "the model folder"],
    report: Annotated[Path, "report.json: the oracle's scores on the unbiased test split"],
    threads: int = 1,
) -> None:
    """Train the audit's independent oracle (class and factors) on the pretraining split."""
    from dicap import runtime
    from dicap.audit.oracle import held_out_report, load_oracle, train_oracle
    from dicap.data.store import DatasetStore
    from dicap.io import atomic_dir, provenance, write_json

    runtime.setup(threads, params["seed"])
    store = DatasetStore.open(dataset_dir)
    pre, test = store.split("pretrain"), store.split("test_unbiased")
    with atomic_dir(out) as tmp:
        train_oracle(store.pixels(pre), pre, len(store.classes), params, tmp, params["seed"])
        scores = held_out_report(load_oracle(tmp), store.pixels(test), test, store.images["test_unbiased"].shape[1])
        write_json(report, {"test_unbiased": scores, **provenance(params, params["seed"])})
    log.info("oracle on test_unbiased: %s", scores)


def audit_counterfactuals(
    dataset_dir: Path, split: Path, oracle_dir: Path, images: Path, table: Path, out: Path, threads: int = 1
) -> None:
    """Score each counterfactual of one split: validity, preservation, distance to the truth."""
    import pandas as pd

    from dicap import runtime
    from dicap.audit import scoring
    from dicap.audit.oracle import load_oracle
    from dicap.data.store import DatasetStore
    from dicap.io import load_arrays, write_table

    runtime.setup(threads, 0)
    store = DatasetStore.open(dataset_dir)
    frame = scoring.audit_counterfactuals(store, pd.read_parquet(split), load_arrays(images), pd.read_parquet(table),
                                          load_oracle(oracle_dir))
    write_table(out, frame)
    log.info("validity %.3f, faithful %.3f over %d counterfactuals", frame["valid"].mean(), frame["faithful"].mean(), len(frame))


def audit_summary(
    datasets: list[str],
    audits: Annotated[list[Path], "per-image audits of the main variant"],
    oracle_reports: Annotated[list[Path], "the oracle rule's report of each dataset"],
    out: Path,
) -> None:
    """Average per-image audits over images and seeds: results/counterfactual_audit.csv."""
    from dicap.audit.scoring import read_audits, read_oracle_reports, summarise
    from dicap.io import write_table

    write_table(out, summarise(read_audits(audits, datasets), read_oracle_reports(oracle_reports, datasets)))

