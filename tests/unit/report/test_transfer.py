"""The transfer tables: accuracy per run and domain over seeds, the average column, DiCap
against its own learner per domain (the positive control against main's learner), and the
sentences that say where a run is ahead by more than two standard errors."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dicap.report.transfer import AVERAGE, build_transfer, read_transfer, to_markdown, write_transfer

SEEDS = (1, 2, 3)
# (variant, method) -> domain -> accuracy per seed
ROWS = {
    ("main", "zeroshot"): {"unshifted": [70, 70, 70], "background": [50, 50, 50], "style": [40, 40, 40]},
    ("main", "coop"): {"background": [60, 62, 64], "style": [45, 47, 49]},
    ("main", "dicap"): {"background": [63, 65, 67], "style": [45, 48, 48]},  # +3 exactly; style +0, +1, -1
    ("true_cf", "dicap"): {"background": [70, 71, 75], "style": [46, 47, 50]},  # +10, +9, +11; +1, 0, +1
}


def _write(root, rows=ROWS, dataset="digits", target="shifts"):
    paths = []
    for (variant, method), domains in rows.items():
        for i, seed in enumerate(SEEDS):
            path = root / "transfer" / dataset / variant / target / f"seed{seed}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            old = pd.read_csv(path) if path.exists() else pd.DataFrame()
            new = pd.DataFrame([{"method": method, "seed": seed, "target": target, "split": d, "domain": d,
                                 "accuracy": float(acc[i])} for d, acc in domains.items()])
            pd.concat([old, new]).to_csv(path, index=False)
            if path not in paths:
                paths.append(path)
    return paths


def test_mean_std_and_se_per_run_and_domain_with_the_average_of_the_domains(tmp_path):
    summary, _ = build_transfer(read_transfer(_write(tmp_path)))
    row = summary[(summary["method"] == "coop") & (summary["domain"] == "background")].iloc[0]
    assert row["accuracy"] == pytest.approx(62) and row["accuracy_std"] == pytest.approx(2)
    assert row["accuracy_se"] == pytest.approx(2 / math.sqrt(3)) and row["n"] == 3 and row["seeds"] == "1 2 3"
    average = summary[(summary["method"] == "coop") & (summary["domain"] == AVERAGE)].iloc[0]
    assert average["accuracy"] == pytest.approx((62 + 47) / 2)  # the mean of the domain columns, as the papers average
    assert list(dict.fromkeys(summary["domain"])) == ["unshifted", "background", "style", AVERAGE]
    zeroshot = summary[(summary["method"] == "zeroshot") & (summary["domain"] == AVERAGE)].iloc[0]
    assert zeroshot["accuracy"] == pytest.approx(45)  # the unshifted column is the source's own: not averaged


def test_dicap_and_its_positive_control_are_paired_with_their_own_learner_per_domain(tmp_path):
    _, paired = build_transfer(read_transfer(_write(tmp_path)))
    dicap = paired[(paired["method"] == "dicap") & (paired["baseline"] == "coop")].set_index(["variant", "domain"])
    assert dicap.loc[("main", "background"), "delta"] == pytest.approx(3) and dicap.loc[("main", "background"), "se"] == 0
    assert dicap.loc[("true_cf", "background"), "delta"] == pytest.approx(10)
    assert (dicap["baseline_variant"] == "main").all()  # the control's learner is main's run
    coop = paired[(paired["method"] == "coop")].set_index("domain")
    assert coop.loc["background", "baseline"] == "zeroshot" and coop.loc["background", "delta"] == pytest.approx(12)


def test_the_sentences_say_where_a_run_is_ahead_by_more_than_two_standard_errors(tmp_path):
    summary, paired = build_transfer(read_transfer(_write(tmp_path)))
    text = to_markdown("domain_generalization", summary, paired)
    main = next(line for line in text.splitlines() if line.startswith("- **digits, dicap**"))
    assert "beyond 2 SE on background (+3.00 ± 0.00); not on style" in main
    control = next(line for line in text.splitlines() if line.startswith("- **digits, dicap (true_cf)**"))
    assert "on background (+10.00" in control and "style (+0.67" in control  # 0.67 > 2 x 0.33
    assert "| coop |  | 62.00 ± 1.15 | 47.00 ± 1.15 | 54.50 ± 1.15 |" in text  # no unshifted run: a blank cell


@pytest.mark.parametrize("changed, ahead", [((1, 2, 3), True), ((-1, 1, 3), False), ((0, 0, 0), False)])
def test_a_gain_counts_only_beyond_two_standard_errors(tmp_path, changed, ahead):
    rows = {("main", "coop"): {"style": [50, 50, 50]}, ("main", "dicap"): {"style": [50 + c for c in changed]}}
    summary, paired = build_transfer(read_transfer(_write(tmp_path, rows)))
    # +2 with SE 0.58 is beyond 2 SE; +1 with SE 1.15 is not, nor is no change at all
    assert ("beyond 2 SE on no domain" not in to_markdown("domain_generalization", summary, paired)) == ahead


def test_a_file_whose_rows_name_another_target_than_its_path_is_refused(tmp_path):
    path = _write(tmp_path, {("main", "coop"): {"test": [50, 50, 50]}}, target="imagenet_a")[0]
    frame = pd.read_csv(path).assign(target="imagenet_r")
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match="imagenet_a"):
        read_transfer([path])


def test_the_paper_suites_targets_are_columns_and_its_prompts_unlabelled(tmp_path):
    paths = []
    for target, accs in (("imagenet", [69, 70, 71]), ("imagenet_v2", [60, 61, 62]), ("imagenet_sketch", [46, 47, 48])):
        for i, seed in enumerate(SEEDS):
            path = tmp_path / "p" / "transfer" / "imagenet" / "all_classes" / target / f"seed{seed}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame([{"method": "coop", "seed": seed, "target": target, "split": "test", "domain": target,
                           "accuracy": accs[i]}]).to_csv(path, index=False)
            paths.append(path)
    summary, paired = build_transfer(read_transfer(paths))
    text = to_markdown("domain_generalization", summary, paired)
    assert "| method | imagenet | imagenet_v2 | imagenet_sketch | average |" in text
    assert "| coop | 70.00 ± 0.58 | 61.00 ± 0.58 | 47.00 ± 0.58 | 54.00 ± 0.58 |" in text  # the source column is not averaged


def test_write_transfer_heads_the_markdown_with_the_run(tmp_path):
    summary, paired = build_transfer(read_transfer(_write(tmp_path)))
    write_transfer("domain_generalization", summary, paired, tmp_path / "dg.csv", tmp_path / "dg.md",
                   {"run": "study", "seeds": list(SEEDS)})
    assert (tmp_path / "dg.md").read_text().startswith("Run: study")
    assert pd.read_csv(tmp_path / "dg.csv").shape[0] == len(summary)
    assert (tmp_path / "dg.provenance.json").exists()
