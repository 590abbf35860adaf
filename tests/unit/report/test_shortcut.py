"""The shortcut table: aligned / conflict / gap / worst-group per method and control with their SEs,
DiCap against its own learner, the controls' verdicts and the dose-response."""

from __future__ import annotations

import pandas as pd
import pytest

from dicap.report.paired import paired
from dicap.report.shortcut import (
    build_paired, build_shortcut, draw_shortcut, per_seed, read_seeds, share, summarise, to_markdown, verdicts,
    write_shortcut,
)

# per (variant, method): per-seed (aligned, conflict, unbiased) base accuracy, seeds 1, 2, 3
ROWS = {
    ("main", "zeroshot"): ([79, 80, 81], [77, 78, 79], [85, 85, 85]),
    ("main", "coop"): ([91, 92, 93], [69, 70, 71], [85, 86, 87]),
    ("main", "kgcoop"): ([85, 86, 87], [75, 76, 77], [86, 86, 86]),
    ("main", "dicap"): ([90, 91, 92], [70, 72, 72], [84, 85, 86]),  # conflict - coop's: 1, 2, 1
    ("main", "dicap_pos"): ([89, 90, 91], [74, 76, 78], [84, 86, 88]),  # 5, 6, 7
    ("main", "dicap_kgcoop"): ([86, 87, 88], [76, 77, 78], [86, 86, 86]),  # kgcoop's + 1 (CoOp's + 7)
    ("unbiased_shots", "coop"): ([78, 79, 80], [76, 78, 80], [85, 85, 85]),  # gap 2, 1, 0 against zero-shot's 2, 2, 2
    ("true_cf", "dicap"): ([90, 91, 92], [70, 73, 72], [85, 86, 87]),  # 1, 3, 1: more than 2 SE, inside the 95% interval
    ("true_cf", "dicap_pos"): ([86, 87, 88], [80, 82, 84], [86, 87, 88]),  # 11, 12, 13
    ("true_cf", "dicap_kgcoop"): ([86, 87, 88], [75, 76, 77], [86, 86, 86]),  # kgcoop's exactly
}
SEEDS = (1, 2, 3)


def _write_metrics(root, dataset="digits", rows=ROWS):
    paths = []
    for (variant, method), (aligned, conflict, unbiased) in rows.items():
        for i, seed in enumerate(SEEDS):
            path = root / "metrics" / dataset / variant / f"seed{seed}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            old = pd.read_csv(path) if path.exists() else pd.DataFrame()
            new = pd.DataFrame([
                {"method": method, "seed": seed, "split": split, "base": acc[i], "novel": 50.0 + i, "hm": 60.0,
                 "base_worst": acc[i] - 10, "novel_worst": 40.0}
                for split, acc in (("test_unbiased", unbiased), ("test_aligned", aligned), ("test_conflict", conflict))
            ])
            pd.concat([old, new]).to_csv(path, index=False)
            if path not in paths:
                paths.append(path)
    return paths


def _report(root, rows=ROWS, dataset="digits"):
    seeds = read_seeds(_write_metrics(root, dataset, rows), [dataset])
    return summarise(seeds, [dataset]), build_paired(seeds, [dataset])


def test_table_has_every_row_with_what_it_trained_on(tmp_path):
    table = build_shortcut(_write_metrics(tmp_path), ["digits"])
    described = {(r.variant, r.method): (r.shots, r.counterfactuals) for r in table.itertuples()}
    assert described[("main", "zeroshot")] == ("none", "none") and described[("main", "coop")] == ("biased", "none")
    assert described[("main", "dicap_kgcoop")] == ("biased", "generated")
    assert described[("unbiased_shots", "coop")] == ("unbiased", "none")
    assert described[("true_cf", "dicap_pos")] == ("biased", "true")
    coop = table[(table["method"] == "coop") & (table["variant"] == "main")].iloc[0]
    assert coop["aligned"] == 92.0 and coop["conflict"] == 70.0 and coop["gap"] == 22.0
    assert coop["conflict_std"] == pytest.approx(1.0) and coop["conflict_se"] == pytest.approx(1 / 3**0.5, abs=1e-4)
    assert coop["gap_std"] == 0.0 and coop["gap_se"] == 0.0  # the offsets cancel in the gap
    assert coop["worst_group"] == 60.0  # min of the two splits' worst classes
    assert coop["n"] == 3 and coop["seeds"] == "1 2 3"


def test_dicap_is_paired_with_its_own_learner(tmp_path):
    _, paired_rows = _report(tmp_path)
    kg = paired_rows[(paired_rows["method"] == "dicap_kgcoop") & (paired_rows["metric"] == "conflict")].set_index("variant")
    assert set(kg["baseline"]) == {"kgcoop"}
    assert kg.loc["main", "delta"] == pytest.approx(1.0) and kg.loc["true_cf", "delta"] == pytest.approx(0.0)
    unbiased = paired_rows[(paired_rows["method"] == "dicap_pos") & (paired_rows["metric"] == "unbiased")
                           & (paired_rows["variant"] == "main")].iloc[0]
    assert unbiased["delta"] == pytest.approx(0.0) and unbiased["baseline"] == "coop"
    assert set(paired_rows["metric"]) == {"conflict", "gap", "worst_group", "unbiased"}


def test_verdicts_are_computed_from_the_paired_numbers(tmp_path):
    table, paired_rows = _report(tmp_path)
    text = "\n".join(verdicts(table, paired_rows))
    # negative control: gap - zero-shot's = 0, -1, -2: -1 ± 0.58, inside 2 SE (1.15)
    assert "**digits, negative control**" in text and "within 2 SE (1.2): passes" in text
    # positive controls, each against its own learner's conflict accuracy
    assert "dicap_pos on the true counterfactuals against coop's conflict accuracy: Δ +12.0 ± 0.6" in text
    assert "dicap on the true counterfactuals against coop's conflict accuracy: Δ +1.7 ± 0.7" in text
    assert "more than 2 SE (1.3): passes" in text  # 1.67 > 1.33, though the 95% interval holds 0
    assert "dicap_kgcoop on the true counterfactuals against kgcoop's conflict accuracy: Δ +0.0" in text
    assert "against CoOp's" not in text
    # dose-response: dicap_pos reaches (76 - 70) / (82 - 70) of the true gain on conflict accuracy
    assert "| digits | dicap_pos | coop | conflict |" in text
    dose = {line.split("|")[2].strip() + "/" + line.split("|")[3].strip() + "/" + line.split("|")[4].strip(): line.split("|")[-2].strip()
            for line in text.splitlines() if line.startswith("| digits |")}
    assert dose["dicap_pos/coop/conflict"] == "50%"
    assert dose["dicap_pos/coop/unbiased base"] == "0%"  # generated 0, true +1 (every seed)
    assert dose["dicap/coop/conflict"] == "no gain to share"  # the true gain's interval holds 0
    assert dose["dicap/kgcoop/conflict"] == "no gain to share"


def test_a_negative_control_beyond_two_se_fails(tmp_path):
    drifting = {**ROWS, ("unbiased_shots", "coop"): ([78, 79, 80], [86, 88, 90], [85, 85, 85])}  # gap -8, -9, -10
    table, paired_rows = _report(tmp_path, drifting)
    assert "beyond 2 SE (1.2): fails" in "\n".join(verdicts(table, paired_rows))


@pytest.mark.parametrize("generated, true, expected", [
    ([1, 2, 3], [4, 4, 4], "50%"),
    ([-1, -2, -3], [4, 4, 4], "-50%"),
    ([1, 2, 3], [-4, 4, 12], "no gain to share"),
    ([1, 2, 3], [-4, -4.1, -3.9], "no gain to share (the true counterfactuals lose)"),
])
def test_share_of_the_true_gain(generated, true, expected):
    assert share(paired(generated), paired(true)) == expected


def test_a_dataset_without_controls_gets_rows_but_no_verdict(tmp_path):
    main_only = {k: v for k, v in ROWS.items() if k[0] == "main"}
    table, paired_rows = _report(tmp_path, main_only, "shapes")
    assert set(table["variant"]) == {"main"}
    assert not any("control" in line or "dose" in line for line in verdicts(table, paired_rows))
    assert "DiCap against its own learner" in to_markdown(table, paired_rows)


def test_outputs_are_written(tmp_path):
    table, paired_rows = _report(tmp_path)
    write_shortcut(table, paired_rows, tmp_path / "s.csv", tmp_path / "s.md", tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "s.md").read_text()
    assert md == to_markdown(table, paired_rows) and "| digits | coop | unbiased | none |" in md
    assert "| digits | coop | biased | none | 92.0 ± 0.6 | 70.0 ± 0.6 | 22.0 ± 0.0 |" in md  # mean ± SE
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "s.csv"), table, check_dtype=False)


def test_the_figure_sets_the_controls_apart(tmp_path):
    table, _ = _report(tmp_path)
    fig = draw_shortcut(table)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    controls = [i for i, text in enumerate(labels) if "(" in text]
    assert controls == list(range(len(labels) - len(controls), len(labels)))  # the controls come last
    assert any("controls" in t.get_text() for t in fig.axes[0].texts)


def test_metrics_without_the_paired_splits_are_refused(tmp_path):
    path = tmp_path / "metrics" / "dtd" / "main" / "seed1.csv"
    path.parent.mkdir(parents=True)
    pd.DataFrame([{"method": "coop", "seed": 1, "split": "test", "base": 1, "novel": 1, "hm": 1}]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="test_aligned"):
        per_seed(pd.read_csv(path).assign(dataset="dtd", variant="main"))


@pytest.mark.parametrize("factor, words", [("object_colour", "on the object colour"), ("scale", "on the scale"),
                                           ("position", "on the position")])
def test_another_spurious_factor_is_named_in_the_headings(tmp_path, factor, words):
    """The background keeps the words the default run always wrote; another factor is named."""
    table, paired_rows = _report(tmp_path)
    assert to_markdown(table, paired_rows).startswith("### Shortcut: base-class")
    assert to_markdown(table, paired_rows, factor).startswith(f"### Shortcut {words}: base-class")
    assert all(words not in a.get_title() for a in draw_shortcut(table).axes)
    assert all(words in a.get_title() for a in draw_shortcut(table, factor).axes if a.get_title())
