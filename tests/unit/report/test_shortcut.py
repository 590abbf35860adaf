"""The shortcut table: aligned / conflict / gap / worst-group per method and control, and its verdicts."""

from __future__ import annotations

import pandas as pd
import pytest

from dicap.report.shortcut import build_shortcut, per_seed, to_markdown, verdicts, write_shortcut

# per (variant, method): (aligned, conflict) base accuracy; seeds add their own offsets
ROWS = {
    ("main", "zeroshot"): (80.0, 78.0),
    ("main", "coop"): (92.0, 70.0),
    ("main", "dicap"): (91.0, 72.0),
    ("main", "dicap_pos"): (90.0, 76.0),
    ("unbiased_shots", "coop"): (79.0, 78.0),
    ("true_cf", "dicap"): (90.0, 73.0),
    ("true_cf", "dicap_pos"): (86.0, 82.0),
}
SEED_OFFSET = {1: -1.0, 2: 0.0, 3: 1.0}


def _write_metrics(root, dataset="digits", rows=ROWS, seeds=SEED_OFFSET):
    paths = []
    for (variant, method), (aligned, conflict) in rows.items():
        for seed, off in seeds.items():
            path = root / "metrics" / dataset / variant / f"seed{seed}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            old = pd.read_csv(path) if path.exists() else pd.DataFrame()
            new = pd.DataFrame([
                {"method": method, "seed": seed, "split": split, "base": acc + off, "novel": 50.0 + off, "hm": 60.0,
                 "base_worst": acc + off - 10, "novel_worst": 40.0}
                for split, acc in (("test_unbiased", 85.0), ("test_aligned", aligned), ("test_conflict", conflict))
            ])
            pd.concat([old, new]).to_csv(path, index=False)
            if path not in paths:
                paths.append(path)
    return paths


def test_table_has_every_row_with_what_it_trained_on(tmp_path):
    table = build_shortcut(_write_metrics(tmp_path), ["digits"])
    described = {(r.variant, r.method): (r.shots, r.counterfactuals) for r in table.itertuples()}
    assert described == {
        ("main", "zeroshot"): ("none", "none"), ("main", "coop"): ("biased", "none"),
        ("main", "dicap"): ("biased", "generated"), ("main", "dicap_pos"): ("biased", "generated"),
        ("unbiased_shots", "coop"): ("unbiased", "none"),
        ("true_cf", "dicap"): ("biased", "true"), ("true_cf", "dicap_pos"): ("biased", "true"),
    }
    coop = table[(table["method"] == "coop") & (table["variant"] == "main")].iloc[0]
    assert coop["aligned"] == 92.0 and coop["conflict"] == 70.0 and coop["gap"] == 22.0
    assert coop["conflict_std"] == pytest.approx(1.0) and coop["gap_std"] == 0.0  # the offsets cancel in the gap
    assert coop["worst_group"] == 60.0  # min of the two splits' worst classes
    assert coop["novel"] == 50.0 and coop["novel_gap"] == 0.0 and coop["seeds"] == "1 2 3"


def test_verdicts_are_computed_from_the_table(tmp_path):
    table = build_shortcut(_write_metrics(tmp_path), ["digits"])
    text = "\n".join(verdicts(table))
    assert "gap of 1.0 (± 0.0) against zero-shot's 2.0: -1.0 beyond" in text
    # dicap_pos on true counterfactuals: 82 vs CoOp's 70, margin 12 > 2 x 1.0
    assert "dicap_pos on the true counterfactuals reaches conflict 82.0 against CoOp's 70.0: +12.0, more than" in text
    assert "closing 50% of the gap" in text  # generated dicap_pos 76: (76 - 70) / 12
    worse = {**ROWS, ("main", "dicap_pos"): (90.0, 67.0)}  # generated below CoOp: nothing closed, said so
    text = "\n".join(verdicts(build_shortcut(_write_metrics(tmp_path / "worse", rows=worse), ["digits"])))
    assert "below CoOp: none (-25%) of the gap" in text
    # a margin inside the seed noise is said to be so
    noisy = _write_metrics(tmp_path / "noisy", seeds={1: -8.0, 2: 0.0, 3: 8.0})
    assert "not more than twice" in "\n".join(verdicts(build_shortcut(noisy, ["digits"])))


def test_a_dataset_without_controls_gets_rows_but_no_verdict(tmp_path):
    main_only = {k: v for k, v in ROWS.items() if k[0] == "main"}
    table = build_shortcut(_write_metrics(tmp_path, "shapes", main_only), ["shapes"])
    assert set(table["variant"]) == {"main"}
    assert not any("control" in line for line in verdicts(table))


def test_outputs_are_written(tmp_path):
    table = build_shortcut(_write_metrics(tmp_path), ["digits"])
    write_shortcut(table, tmp_path / "s.csv", tmp_path / "s.md", tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "s.md").read_text()
    assert md == to_markdown(table) and "| digits | coop | unbiased | none |" in md
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "s.csv"), table, check_dtype=False)


def test_metrics_without_the_paired_splits_are_refused(tmp_path):
    path = tmp_path / "metrics" / "dtd" / "main" / "seed1.csv"
    path.parent.mkdir(parents=True)
    pd.DataFrame([{"method": "coop", "seed": 1, "split": "test", "base": 1, "novel": 1, "hm": 1}]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="test_aligned"):
        per_seed(pd.read_csv(path).assign(dataset="dtd", variant="main"))
