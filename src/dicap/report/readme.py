"""The README's results section, written from the reference file and never typed by hand.

``dicap readme_results`` rewrites the part of README.md between the ``results:start`` and
``results:end`` markers; ``--check`` fails when the README differs from what the reference
gives, so a test catches a typed or stale number.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dicap.io import atomic_output
from dicap.report.markdown import markdown_table
from dicap.report.reproduction import describe_machine, read_reference

START, END = "<!-- results:start -->", "<!-- results:end -->"
AUDIT_COLUMNS = ["valid", "kept_background", "kept_object_colour", "kept_position", "kept_scale", "faithful",
                 "mse_to_true", "true_valid", "oracle_heldout_class_accuracy"]
SHORTCUT_COLUMNS = ["aligned", "conflict", "gap", "worst_group", "novel", "novel_gap"]
TASK_COLUMNS = {"table2": ["i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "novel_i2t_r1"],
                "table3": ["vqa_accuracy", "object_accuracy", "colour_accuracy", "background_accuracy", "place_accuracy",
                           "size_accuracy", "novel_accuracy"]}
TASK_TITLES = {"table2": "Table 2, image-text retrieval", "table3": "Table 3, VQA"}
BACKBONE_COLUMNS = ["clip_zero_shot_accuracy", "inversion_reconstruction_mse", "guide_success_rate"]


def _pivot(frame: pd.DataFrame, table: str, index: list[str], columns: list[str]) -> pd.DataFrame:
    part = frame[frame["table"] == table]
    wide = part.pivot_table(index=index, columns="metric", values="value", sort=False)
    return wide[[c for c in columns if c in wide.columns]].reset_index()


def _markdown(frame: pd.DataFrame, digits: int) -> list[str]:
    rows = ([f"{v:.{digits}f}" if isinstance(v, float) else v for v in row] for row in frame.itertuples(index=False))
    return markdown_table(frame.columns, rows)


def results_section(reference_csv: Path) -> str:
    """Markdown for the README: Table 1, the backbones and the audit, as the reference holds them."""
    frame, info = read_reference(reference_csv)
    frame = frame.astype({"value": float})
    lines = [START, "### Reference results (embedded suite, default config)", "",
             f"Written by `dicap readme_results` from `results/reference/{reference_csv.name}`, measured on "
             f"{describe_machine(info)}. Every run compares itself with these numbers in "
             "`results/reproduction.md`.", ""]
    table1 = frame[frame["table"] == "table1"]
    for split, part in table1.groupby("split", sort=False):
        wide = _pivot(part, "table1", ["dataset", "method"], ["base", "novel", "hm"])
        lines += [f"#### Table 1, {split} (mean over seeds)", "", *_markdown(wide, 2), ""]
    for table, columns in TASK_COLUMNS.items():
        if (frame["table"] == table).any():
            wide = _pivot(frame, table, ["dataset", "method"], columns)
            lines += [f"#### {TASK_TITLES[table]}, test_unbiased (mean over seeds)", "", *_markdown(wide, 2), ""]
    if (frame["table"] == "backbones").any():
        lines += ["#### Backbones", "", *_markdown(_pivot(frame, "backbones", ["dataset"], BACKBONE_COLUMNS), 4), ""]
    if (frame["table"] == "shortcut").any():
        shortcut = _pivot(frame, "shortcut", ["dataset", "method", "split"], SHORTCUT_COLUMNS).rename(columns={"split": "variant"})
        lines += ["#### The shortcut table (base classes on paired renders; mean over seeds)", "", *_markdown(shortcut, 1), ""]
    if (frame["table"] == "counterfactual_audit").any():
        audit = _pivot(frame, "counterfactual_audit", ["dataset"], AUDIT_COLUMNS)
        lines += ["#### Counterfactual audit at the default guidance scale", "", *_markdown(audit, 3), ""]
    return "\n".join([*lines, END])


def update_readme(readme: Path, section: str, check: bool = False) -> bool:
    """Replace the marked section; with ``check``, only report whether it is up to date."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} section")
    head, rest = text.split(START, 1)
    new = head + section + rest.split(END, 1)[1]
    if check:
        return new == text
    with atomic_output(readme) as tmp:
        tmp.write_text(new)
    return True
